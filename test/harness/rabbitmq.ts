/**
 * Starts a private RabbitMQ 3.10 node with the STOMP plugin for one test file: its own HOME,
 * Mnesia, log and config dirs under one temp dir, STOMP and AMQP listeners on free loopback ports,
 * its own epmd port and distribution port (so several nodes can run at once), and waits until it
 * answers a real STOMP CONNECT. `stop()` kills the process group, stops its epmd and removes the
 * temp dir, so no durable queue survives into the next run.
 *
 * Started with the scripts in /usr/lib/rabbitmq/bin (the /usr/sbin wrappers switch to the
 * `rabbitmq` user and use the system node); that works as root too, which is how CI runs.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { executable } from "./components";
import { stompAnswers } from "./embedded-broker";
import { freePort } from "./ports";

export const rabbitMqServer = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const epmd = "/usr/bin/epmd";

/** True when the Debian rabbitmq-server package is installed. */
export const rabbitMqInstalled = (): boolean => executable(rabbitMqServer) && executable(epmd);

export interface RabbitMqOptions {
  /** Lines appended to rabbitmq.conf (new-style sysctl format). */
  extraConfig?: string[];
  /** Deadline for the first STOMP CONNECT to succeed after a (re)start. */
  readyTimeoutMs?: number;
}

export interface RabbitMq {
  /** `stomp://127.0.0.1:<stompPort>` */
  url: string;
  host: string;
  /** STOMP port. */
  port: number;
  amqpPort: number;
  /** Erlang node name, unique per instance. */
  nodeName: string;
  /** Pid of the current `rabbitmq-server` process group leader (changes after `restart()`). */
  pid: number;
  /** The temp dir holding HOME, Mnesia, logs and config. */
  dataDir: string;
  /** Kills the process group, stops this node's epmd, removes `dataDir`. Idempotent. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL) to the process group and waits for the exit. Data is kept. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Stops the node (SIGTERM, a clean shutdown that flushes queues to disk; SIGKILL after a
   * deadline) and starts it again with the same name, ports and Mnesia dir.
   */
  restart(): Promise<void>;
  /** The node's log file and console output so far (for failure messages). */
  log(): string;
}

let instances = 0;

/** Pids of processes whose environment has `HOME=<home>`: everything one node started. */
function ownProcesses(home: string): number[] {
  const marker = Buffer.from(`\0HOME=${home}\0`);
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${entry}/environ`)]);
      if (environ.includes(marker)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function startRabbitMq(opts: RabbitMqOptions = {}): Promise<RabbitMq> {
  const host = "127.0.0.1";
  const dataDir = mkdtempSync(join(tmpdir(), "vmc-rabbitmq-"));
  const [port, amqpPort, distPort, epmdPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const nodeName = `vmc${process.pid}n${++instances}@localhost`;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 90_000;
  for (const d of ["home", "mnesia", "log"]) mkdirSync(join(dataDir, d));
  writeFileSync(join(dataDir, "enabled_plugins"), "[rabbitmq_stomp].\n");
  writeFileSync(join(dataDir, "rabbitmq-env.conf"), "");
  writeFileSync(
    join(dataDir, "rabbitmq.conf"),
    [
      `listeners.tcp.default = ${host}:${amqpPort}`,
      `stomp.listeners.tcp.1 = ${host}:${port}`,
      "log.file.level = info",
      "log.console = false",
      ...(opts.extraConfig ?? []),
      "",
    ].join("\n"),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    LANG: "C.UTF-8",
    HOME: join(dataDir, "home"),
    RABBITMQ_CONF_ENV_FILE: join(dataDir, "rabbitmq-env.conf"),
    RABBITMQ_CONFIG_FILE: join(dataDir, "rabbitmq.conf"),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dataDir, "advanced.config"),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dataDir, "enabled_plugins"),
    RABBITMQ_MNESIA_BASE: join(dataDir, "mnesia"),
    RABBITMQ_LOG_BASE: join(dataDir, "log"),
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: host,
    RABBITMQ_DIST_PORT: String(distPort),
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: host,
  };

  let child: ChildProcess | undefined;
  let output = "";
  let stopped = false;

  const log = (): string => {
    let file = "";
    try {
      file = readFileSync(join(dataDir, "log", `${nodeName}.log`), "utf8");
    } catch {
      // not written yet
    }
    return `${output}\n--- ${nodeName}.log ---\n${file.slice(-20_000)}`;
  };

  const killGroup = (signal: NodeJS.Signals): void => {
    if (!child?.pid) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };

  const kill = async (signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    if (!child) return;
    killGroup(signal);
    await waitExit(child, 60_000);
  };

  const launch = async (): Promise<void> => {
    const proc = spawn(rabbitMqServer, [], { cwd: dataDir, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    const keep = (c: Buffer): void => {
      if (output.length < 200_000) output += c.toString();
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    const deadline = Date.now() + readyTimeoutMs;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`rabbitmq-server exited (${proc.exitCode ?? proc.signalCode}) before answering STOMP:\n${log()}`);
      }
      if (await stompAnswers(host, port, 1000)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    await kill("SIGKILL");
    throw new Error(`RabbitMQ did not answer STOMP CONNECT on ${host}:${port} within ${readyTimeoutMs} ms:\n${log()}`);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await kill("SIGKILL");
    // beam.smp is a child of the group leader and may still be registered with epmd for a
    // moment, and epmd refuses `-kill` while a node is registered; epmd also daemonises into its
    // own process group. So: ask politely, then end whatever still runs with this node's HOME.
    spawnSync(epmd, ["-kill"], { env, stdio: "ignore", timeout: 10_000 });
    const deadline = Date.now() + 10_000;
    for (let left = ownProcesses(env.HOME!); left.length && Date.now() < deadline; left = ownProcesses(env.HOME!)) {
      for (const pid of left) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    rmSync(dataDir, { recursive: true, force: true });
  };

  try {
    await launch();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url: `stomp://${host}:${port}`,
    host,
    port,
    amqpPort,
    nodeName,
    get pid() {
      return child?.pid ?? -1;
    },
    dataDir,
    stop,
    kill,
    async restart() {
      if (child) {
        killGroup("SIGTERM");
        if (!(await waitExit(child, 30_000))) await kill("SIGKILL");
      }
      await launch();
    },
    log,
  };
}
