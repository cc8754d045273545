/**
 * Controller processes for the commands tests (test/commands/driver.ts), each its own process
 * group, answering requests and reporting events as JSON lines.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CommandOutputEvent, CommandRecord } from "@vmc/protocol/rpc";

const root = fileURLToPath(new URL("../..", import.meta.url));

export interface ControllerOptions {
  lease?: boolean;
  vms?: Record<string, string>;
  resultGraceMs?: number;
  writeIntervalMs?: number;
}

export type ControllerEvent = { event: "started" | "finished"; record: CommandRecord } | { event: "output"; output: CommandOutputEvent };

export class ControllerProcess {
  readonly events: ControllerEvent[] = [];
  ready!: { pid: number; instanceId: string; slot: number | null };
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly watchers = new Set<() => void>();
  private nextId = 1;
  private stderr = "";
  private exited = false;

  private constructor(readonly child: ChildProcess) {}

  static async start(home: string, brokerUrl: string, options: ControllerOptions = {}): Promise<ControllerProcess> {
    const args = ["--import", "tsx", join(root, "test/commands/driver.ts"), "--broker", brokerUrl];
    if (options.lease) args.push("--lease");
    for (const [agent, vm] of Object.entries(options.vms ?? {})) args.push("--vm", `${agent}=${vm}`);
    if (options.resultGraceMs !== undefined) args.push("--result-grace-ms", String(options.resultGraceMs));
    if (options.writeIntervalMs !== undefined) args.push("--write-interval-ms", String(options.writeIntervalMs));
    const child = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, VMC_HOME: home } });
    const c = new ControllerProcess(child);
    child.stderr!.on("data", (d: Buffer) => {
      if (c.stderr.length < 100_000) c.stderr += d.toString();
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.once("exit", (code, signal) => {
        c.exited = true;
        reject(new Error(`controller exited (${code ?? signal}) before it was ready:\n${c.stderr}`));
        for (const p of c.pending.values()) p.reject(new Error(`controller exited (${code ?? signal})`));
        c.notify();
      });
      createInterface({ input: child.stdout! }).on("line", (line) => {
        let msg: { ready?: ControllerProcess["ready"]; id?: number; result?: unknown; error?: { message: string; code?: number } } & Partial<ControllerEvent>;
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        if (msg.ready) {
          c.ready = msg.ready;
          resolve();
        } else if (msg.id !== undefined) {
          const p = c.pending.get(msg.id);
          c.pending.delete(msg.id);
          if (msg.error) p?.reject(Object.assign(new Error(msg.error.message), { code: msg.error.code }));
          else p?.resolve(msg.result);
        } else if (msg.event) {
          c.events.push(msg as ControllerEvent);
          c.notify();
        }
      });
    });
    await withDeadline(ready, 30_000, () => `controller not ready within 30 s:\n${c.stderr}`);
    return c;
  }

  get log(): string {
    return this.stderr;
  }

  request<T>(op: string, params?: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.exited) return reject(new Error("controller has exited"));
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, op, params })}\n`);
    });
  }

  /** Resolves with the first event (seen before or after the call) that `match` accepts. */
  waitEvent(match: (e: ControllerEvent) => boolean, timeoutMs: number, what: string): Promise<ControllerEvent> {
    return withDeadline(
      new Promise<ControllerEvent>((resolve, reject) => {
        const check = () => {
          const hit = this.events.find(match);
          if (hit) {
            this.watchers.delete(check);
            resolve(hit);
          } else if (this.exited) {
            this.watchers.delete(check);
            reject(new Error(`controller exited while waiting for ${what}`));
          }
        };
        this.watchers.add(check);
        check();
      }),
      timeoutMs,
      () => `no ${what} within ${timeoutMs} ms; events: ${JSON.stringify(this.events.map((e) => e.event))}\n${this.stderr.slice(-3000)}`,
    );
  }

  finished(id: string, timeoutMs: number): Promise<CommandRecord> {
    return this.waitEvent((e) => e.event === "finished" && e.record.id === id, timeoutMs, `cmd.finished for ${id}`).then((e) => (e as { record: CommandRecord }).record);
  }

  /** Resolves when the command's streamed output contains `text`; rejects if it finishes first. */
  async output(id: string, text: string, timeoutMs: number): Promise<void> {
    const e = await this.waitEvent(
      (e) => (e.event === "output" && e.output.id === id && Buffer.from(e.output.data, "base64").toString().includes(text)) || (e.event === "finished" && e.record.id === id),
      timeoutMs,
      `output '${text}' of ${id}`,
    );
    if (e.event === "finished") throw new Error(`${id} finished before printing '${text}': ${JSON.stringify(e.record.targets)}`);
  }

  /** kill -9 of the whole process group; resolves when it is gone. */
  async kill(): Promise<void> {
    if (this.child.pid) {
      try {
        process.kill(-this.child.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    if (this.child.exitCode === null && this.child.signalCode === null) await new Promise((r) => this.child.once("exit", r));
  }

  async exit(): Promise<void> {
    await withDeadline(this.request("exit"), 10_000, () => "controller did not exit").catch(() => undefined);
    await this.kill();
  }

  private notify(): void {
    for (const w of [...this.watchers]) w();
  }
}

export function withDeadline<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(what())), ms);
    }),
  ]);
}

export function text(b64: string): string {
  return Buffer.from(b64, "base64").toString();
}
