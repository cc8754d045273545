/**
 * Starts the embedded broker (`node dist/vmc.mjs broker`) as a separate, detached process in its
 * own process group, on a free loopback port and a temp data dir, and waits until it answers a
 * real STOMP CONNECT. Tests call `stop()` in `after`/`t.after`; it kills the whole group.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stompProbe } from "@vmc/server/broker/probe";
import { freePort } from "./ports";

export interface EmbeddedBrokerOptions {
  /** Journal directory; default a fresh temp dir removed by `stop()`. */
  dataDir?: string;
  port?: number;
  usersFile?: string;
  extraArgs?: string[];
}

export interface EmbeddedBroker {
  /** `stomp://127.0.0.1:<port>` */
  url: string;
  host: string;
  port: number;
  /** Pid of the current broker process (changes after `restart()`). */
  pid: number;
  dataDir: string;
  /** SIGKILLs the process group, waits for exit; removes the data dir if the harness made it. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL) to the process group and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a broker again on the same port and data dir (kills the running one first). */
  restart(): Promise<void>;
  /** Everything the broker wrote to stderr so far (for failure messages). */
  log(): string;
}

const root = fileURLToPath(new URL("../..", import.meta.url));
export const vmcBundle = join(root, "dist", "vmc.mjs");
const readyDeadlineMs = 15_000;

/** Resolves true when a STOMP CONNECT at host:port gets CONNECTED within `timeoutMs`. */
export async function stompAnswers(host: string, port: number, timeoutMs = 1000, login = "guest", passcode = "guest"): Promise<boolean> {
  return (await stompProbe(host, port, timeoutMs, { login, passcode })) === "connected";
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
  const ownDataDir = !opts.dataDir;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "vmc-broker-"));
  const port = opts.port ?? (await freePort());
  const host = "127.0.0.1";
  let child: ChildProcess | undefined;
  let stderr = "";
  let login = "guest";
  let passcode = "guest";
  if (opts.usersFile) {
    const first = (JSON.parse(readFileSync(opts.usersFile, "utf8")) as { users?: Array<{ login: string; passcode: string }> }).users?.[0];
    if (first) ({ login, passcode } = first);
  }

  const launch = async (): Promise<void> => {
    const args = [vmcBundle, "broker", "--host", host, "--port", String(port), "--data", dataDir];
    if (opts.usersFile) args.push("--users", opts.usersFile);
    args.push(...(opts.extraArgs ?? []));
    const proc = spawn(process.execPath, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    proc.stderr?.on("data", (c: Buffer) => {
      if (stderr.length < 1_000_000) stderr += c.toString();
    });
    const deadline = Date.now() + readyDeadlineMs;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`vmc broker exited (${proc.exitCode ?? proc.signalCode}) before answering:\n${stderr}`);
      }
      if (await stompAnswers(host, port, 500, login, passcode)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    killGroup("SIGKILL");
    throw new Error(`vmc broker did not answer STOMP CONNECT on ${host}:${port} within ${readyDeadlineMs} ms:\n${stderr}`);
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
    const c = child;
    killGroup(signal);
    await waitExit(c);
  };

  await launch();
  const broker: EmbeddedBroker = {
    url: `stomp://${host}:${port}`,
    host,
    port,
    get pid() {
      return child?.pid ?? -1;
    },
    dataDir,
    kill,
    async stop() {
      await kill("SIGKILL");
      if (ownDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
    async restart() {
      await kill("SIGKILL");
      await launch();
    },
    log: () => stderr,
  };
  return broker;
}
