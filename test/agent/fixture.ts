/**
 * What the agent tests drive: real `vmc agent` processes (detached, own process group, killed
 * in cleanup) and a small controller stand-in that signs commands with a test key pair, sends
 * them to an agent's inbox through the bus client and collects CMD_OUTPUT / CMD_RESULT.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import {
  ControllerInboxMessage,
  Destinations,
  PresenceMessage,
  type CmdOutput,
  type CmdResult,
  type CmdRunInput,
  type Hello,
} from "@vmc/protocol/bus";
import { generateControllerKeyPair, privateKeyFromPem, signMessage } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import { vmcBundle } from "../harness/embedded-broker";
import { eventually } from "./brokers";

export interface AgentProcess {
  id: string;
  readonly pid: number;
  stateDir: string;
  stderr(): string;
  /** SIGKILL (default) or another signal to the agent's process group; resolves on exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the same agent again (same id and state dir). */
  restart(): Promise<void>;
}

export function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function spawnAgent(
  t: TestContext,
  opts: { brokerUrl: string; id: string; publicKey: string; stateDir?: string; labels?: string[]; env?: NodeJS.ProcessEnv },
): Promise<AgentProcess> {
  const stateDir = opts.stateDir ?? tempDir(t, "vmc-agent-state-");
  let child: ChildProcess | undefined;
  let stderr = "";
  const launch = () => {
    const args = [vmcBundle, "agent", "--id", opts.id, "--broker", opts.brokerUrl, "--key", opts.publicKey, "--state-dir", stateDir];
    for (const l of opts.labels ?? []) args.push("--label", l);
    const proc = spawn(process.execPath, args, { detached: true, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...opts.env } });
    proc.stderr?.on("data", (c: Buffer) => {
      if (stderr.length < 200_000) stderr += c.toString();
    });
    child = proc;
  };
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const c = child;
    if (!c?.pid || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    try {
      process.kill(-c.pid, signal);
    } catch {
      return;
    }
    await exited;
  };
  launch();
  t.after(() => kill("SIGKILL"));
  return {
    id: opts.id,
    get pid() {
      return child?.pid ?? -1;
    },
    stateDir,
    stderr: () => stderr,
    kill,
    async restart() {
      await kill("SIGKILL");
      launch();
    },
  };
}

export interface StreamStats {
  /** Distinct bytes received (re-sent bytes counted once, by offset, as the controller does). */
  bytes: number;
  /** False once a chunk started beyond the bytes received so far (a gap: output lost). */
  contiguous: boolean;
  /** Bytes that arrived again (at-least-once delivery after a reconnect). */
  duplicateBytes: number;
  /** Bytes skipped by gaps (never received). */
  gapBytes: number;
  /** The first MiB of the stream. */
  text: string;
  /** The whole stream, for commands listed in {@link TestController.keepAll}. */
  chunks?: Buffer[];
}

export class TestController {
  readonly keys = generateControllerKeyPair();
  readonly privateKey = privateKeyFromPem(this.keys.privateKeyPem);
  readonly replyTo = Destinations.controllerReplies(`test-${randomUUID()}`);
  readonly results = new Map<string, CmdResult[]>();
  readonly output = new Map<string, { stdout: StreamStats; stderr: StreamStats; seqs: number[] }>();
  readonly hellos: Hello[] = [];
  readonly presence: PresenceMessage[] = [];
  /** Commands whose whole output is kept (StreamStats.chunks). */
  readonly keepAll = new Set<string>();

  private constructor(readonly bus: BusClient) {}

  static async create(t: TestContext, brokerUrl: string): Promise<TestController> {
    const bus = new BusClient({ brokerUrl, name: "test-controller", log: () => undefined });
    t.after(() => bus.close());
    const c = new TestController(bus);
    await bus.connect(15_000);
    const replies = bus.subscribeJson(c.replyTo, ControllerInboxMessage, (m) => c.onReply(m));
    const presence = bus.subscribeJson(Destinations.presence, PresenceMessage, (m) => {
      c.presence.push(m);
      if (m.type === "HELLO") c.hellos.push(m);
    });
    await Promise.all([replies.ready, presence.ready]);
    return c;
  }

  private onReply(m: ControllerInboxMessage): void {
    if (m.type === "CMD_RESULT") {
      const list = this.results.get(m.cmdId) ?? [];
      list.push(m);
      this.results.set(m.cmdId, list);
      return;
    }
    this.onOutput(m);
  }

  private onOutput(m: CmdOutput): void {
    let o = this.output.get(m.cmdId);
    if (!o) {
      const keep = this.keepAll.has(m.cmdId);
      const fresh = (): StreamStats => ({ bytes: 0, contiguous: true, duplicateBytes: 0, gapBytes: 0, text: "", ...(keep ? { chunks: [] } : {}) });
      o = { stdout: fresh(), stderr: fresh(), seqs: [] };
      this.output.set(m.cmdId, o);
    }
    o.seqs.push(m.seq);
    const s = o[m.stream];
    const all = Buffer.from(m.data, "base64");
    if (m.offset > s.bytes) {
      s.contiguous = false;
      s.gapBytes += m.offset - s.bytes;
    }
    const skip = Math.min(all.length, Math.max(0, s.bytes - m.offset));
    s.duplicateBytes += skip;
    const data = m.offset > s.bytes ? all : all.subarray(skip);
    s.bytes = Math.max(s.bytes, m.offset + all.length);
    s.chunks?.push(data);
    if (s.text.length < 1024 * 1024) s.text += data.toString("utf8");
  }

  /** Waits for an agent's HELLO (optionally one newer than `notBootId`). */
  hello(agentId: string, notBootId?: string, timeoutMs = 20_000): Promise<Hello> {
    return eventually(`HELLO from ${agentId}`, () => this.hellos.find((h) => h.agentId === agentId && h.bootId !== notBootId), timeoutMs);
  }

  /** A signed CMD_RUN for `agentId` with sensible defaults. */
  run(agentId: string, fields: Partial<CmdRunInput> & { argv: string[] }, key = this.privateKey): Record<string, unknown> & { cmdId: string } {
    const now = Date.now();
    const message = {
      type: "CMD_RUN" as const,
      cmdId: `cmd-${randomUUID()}`,
      agentId,
      to: agentId,
      issuedAt: now,
      expiresAt: now + 60_000,
      replyTo: this.replyTo,
      ...fields,
    };
    return signMessage(message, key);
  }

  sign<T extends object>(message: T): T & { signature: string } {
    return signMessage(message, this.privateKey);
  }

  send(agentId: string, message: unknown): Promise<void> {
    return this.bus.publishJson(Destinations.agentInbox(agentId), message, { receipt: true, headers: { persistent: "true" } });
  }

  /** The `n`-th CMD_RESULT for `cmdId` (1-based). */
  result(cmdId: string, n = 1, timeoutMs = 30_000): Promise<CmdResult> {
    return eventually(`result #${n} of ${cmdId}`, () => this.results.get(cmdId)?.[n - 1], timeoutMs);
  }

  stream(cmdId: string, name: "stdout" | "stderr"): StreamStats {
    return this.output.get(cmdId)?.[name] ?? { bytes: 0, contiguous: true, duplicateBytes: 0, gapBytes: 0, text: "" };
  }
}

export const b64 = (s: string | Buffer): string => Buffer.from(s).toString("base64");
export const unb64 = (s: string): string => Buffer.from(s, "base64").toString("utf8");
