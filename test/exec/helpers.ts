/**
 * What the exec tests share: a broker of either kind, real agent processes
 * (`node dist/vmc.mjs agent`), real `vmc run` processes, and a presence watcher to wait for
 * agents without sleeping. Everything runs in its own process group and temp dir.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Destinations } from "@vmc/protocol/bus";
import { BusClient } from "@vmc/server/bus/client";
import { loadOrCreateControllerKeys, type ControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, vmcBundle } from "../harness/embedded-broker";
import { rabbitMqInstalled, startRabbitMq } from "../harness/rabbitmq";

export type BrokerKind = "embedded" | "rabbitmq";

export interface TestBroker {
  kind: BrokerKind;
  url: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export const brokerAvailable = (kind: BrokerKind): boolean => kind === "embedded" || rabbitMqInstalled();

export async function startBroker(kind: BrokerKind): Promise<TestBroker> {
  const b = kind === "embedded" ? await startEmbeddedBroker() : await startRabbitMq();
  return { kind, url: b.url, stop: () => b.stop(), restart: () => b.restart() };
}

/** A temp `$VMC_HOME` with the controller key pair in it. */
export interface TestHome {
  dir: string;
  keys: ControllerKeys;
  remove(): void;
}

export function makeHome(): TestHome {
  const dir = mkdtempSync(join(tmpdir(), "vmc-exec-"));
  return { dir, keys: loadOrCreateControllerKeys(dir), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!child.pid) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export interface AgentProcess {
  id: string;
  child: ChildProcess;
  log(): string;
  /** SIGTERM (the agent says BYE) and wait. */
  stop(): Promise<void>;
  /** SIGKILL the whole process group (the agent and its commands) and wait. */
  kill(): Promise<void>;
}

export interface AgentSpec {
  id: string;
  labels?: Record<string, string>;
  heartbeatMs?: number;
}

/** Starts `vmc agent` as its own process group. */
export function startAgentProcess(spec: AgentSpec, brokerUrl: string, home: TestHome): AgentProcess {
  const args = [vmcBundle, "agent", "--id", spec.id, "--broker", brokerUrl, "--key", home.keys.publicKey, "--state-dir", join(home.dir, "agents", spec.id)];
  for (const [k, v] of Object.entries(spec.labels ?? {})) args.push("--label", `${k}=${v}`);
  if (spec.heartbeatMs) args.push("--heartbeat-ms", String(spec.heartbeatMs));
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, VMC_HOME: home.dir } });
  let log = "";
  child.stderr?.on("data", (c: Buffer) => {
    if (log.length < 200_000) log += c.toString();
  });
  return {
    id: spec.id,
    child,
    log: () => log,
    stop: async () => {
      killGroup(child, "SIGTERM");
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5000);
      await exited(child);
      clearTimeout(timer);
      killGroup(child, "SIGKILL");
    },
    kill: async () => {
      killGroup(child, "SIGKILL");
      await exited(child);
    },
  };
}

/**
 * Listens to presence so a test can wait until agents are there (HELLO or HEARTBEAT seen),
 * and publishes DISCOVER so agents that connected first answer too.
 */
export class PresenceWatcher {
  private readonly seen = new Set<string>();
  private readonly waiters = new Set<() => void>();

  private constructor(readonly bus: BusClient) {}

  static async open(brokerUrl: string): Promise<PresenceWatcher> {
    const bus = new BusClient({ brokerUrl, name: "test-presence", log: () => {} });
    await bus.connect(15_000);
    const watcher = new PresenceWatcher(bus);
    const sub = bus.subscribe(Destinations.presence, (m) => {
      try {
        const body = JSON.parse(m.body) as { type?: string; agentId?: string };
        if ((body.type === "HELLO" || body.type === "HEARTBEAT") && typeof body.agentId === "string") watcher.saw(body.agentId);
        if (body.type === "BYE" && typeof body.agentId === "string") watcher.seen.delete(body.agentId);
      } catch {
        // not ours to judge
      }
    });
    await sub.ready;
    return watcher;
  }

  private saw(agentId: string): void {
    this.seen.add(agentId);
    for (const w of [...this.waiters]) w();
  }

  /** Resolves when every id has announced itself; rejects after `timeoutMs`. */
  async waitFor(ids: string[], timeoutMs = 20_000): Promise<void> {
    await this.bus.publishJson(Destinations.discover, { type: "DISCOVER", controllerId: "test" });
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (ids.every((id) => this.seen.has(id))) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`agents not seen within ${timeoutMs} ms: ${ids.filter((id) => !this.seen.has(id)).join(", ")}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  forget(id: string): void {
    this.seen.delete(id);
  }

  close(): Promise<void> {
    return this.bus.close();
  }
}

export interface VmcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBytes: number;
  /** Peak VmRSS of the process seen while polling /proc, in bytes (0 when not measured). */
  peakRssBytes: number;
}

export interface VmcProcess {
  child: ChildProcess;
  /** Resolves when `pattern` has appeared on stdout or stderr; rejects on exit or after `timeoutMs`. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  done: Promise<VmcResult>;
}

export interface VmcOptions {
  home: TestHome;
  stdin?: string;
  /** Leave stdin open for the test to write to (`child.stdin`) instead of writing `stdin` and closing it. */
  keepStdinOpen?: boolean;
  /** Keep at most this many bytes of stdout (the rest is only counted). */
  keepStdout?: number;
  /** Poll /proc/<pid>/status for VmRSS every `rssPollMs`. */
  rssPollMs?: number;
  /** Kill the process group after this long (a hung `vmc run` fails the test instead of hanging it). */
  timeoutMs?: number;
}

const running = new Set<ChildProcess>();

/** Kills every `vmc` process a test started and has not seen exit (call in `after`). */
export function killStrays(): void {
  for (const child of running) killGroup(child, "SIGKILL");
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runs `node dist/vmc.mjs ARGS` in its own process group. */
export function vmc(args: string[], options: VmcOptions): VmcProcess {
  const child = spawn(process.execPath, [vmcBundle, ...args], {
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, VMC_HOME: options.home.dir, VMC_BROKER: "" },
  });
  running.add(child);
  const keep = options.keepStdout ?? 10 * 1024 * 1024;
  let stdout = "";
  let stderr = "";
  let stdoutBytes = 0;
  let peak = 0;
  const listeners = new Set<() => void>();
  child.stdout!.on("data", (c: Buffer) => {
    stdoutBytes += c.length;
    if (stdout.length < keep) stdout += c.toString();
    for (const l of [...listeners]) l();
  });
  child.stderr!.on("data", (c: Buffer) => {
    if (stderr.length < 1_000_000) stderr += c.toString();
    for (const l of [...listeners]) l();
  });
  child.stdin!.on("error", () => {});
  if (!options.keepStdinOpen) child.stdin!.end(options.stdin ?? "");
  const poll = options.rssPollMs ? setInterval(() => (peak = Math.max(peak, rssOf(child.pid!))), options.rssPollMs) : undefined;
  const killer = setTimeout(() => killGroup(child, "SIGKILL"), options.timeoutMs ?? 60_000);
  const done = new Promise<VmcResult>((resolve) => {
    child.on("close", (code, signal) => {
      if (poll) clearInterval(poll);
      clearTimeout(killer);
      running.delete(child);
      for (const l of [...listeners]) l();
      resolve({ code, signal, stdout, stderr, stdoutBytes, peakRssBytes: peak });
    });
  });
  const waitForOutput = (pattern: RegExp, timeoutMs = 20_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(stdout) || pattern.test(stderr)) {
          cleanup();
          resolve();
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`vmc exited before printing ${pattern}: stdout=${stdout.slice(-2000)} stderr=${stderr.slice(-2000)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${pattern} within ${timeoutMs} ms: stdout=${stdout.slice(-2000)} stderr=${stderr.slice(-2000)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return { child, waitForOutput, done };
}

/** One target's entry in `vmc run --json`. */
export interface JsonTarget {
  agentId: string;
  status: string;
  agentStatus: string | null;
  exitCode: number | null;
  signal: string | null;
  reason?: string;
  stdout: string;
  stderr: string;
  stdoutBytes: number;
  resources: { cpuUserMs: number; cpuSystemMs: number; peakRssBytes: number; wallMs: number } | null;
}

export function parseRunJson(result: VmcResult): { ok: boolean; targets: JsonTarget[] } {
  try {
    return JSON.parse(result.stdout) as { ok: boolean; targets: JsonTarget[] };
  } catch {
    throw new Error(`vmc run --json printed no JSON (exit ${result.code}): stdout=${result.stdout.slice(0, 2000)} stderr=${result.stderr.slice(-3000)}`);
  }
}
