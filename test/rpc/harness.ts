/**
 * A controller endpoint (`vmc rpc` in either framing, or `vmc serve --stdio`) as a real child
 * process, with a small client written here (not the server's own reader, so a framing bug on the
 * server side cannot hide in the test): requests, notifications, raw bytes, stderr lines.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vmcBundle } from "../harness/embedded-broker";

export type EndpointKind = "rpc-lsp" | "rpc-ndjson" | "serve";
export const ENDPOINTS: EndpointKind[] = ["rpc-lsp", "rpc-ndjson", "serve"];

export interface RpcResponse {
  jsonrpc: "2.0";
  id: number | string | null;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}
export interface RpcNotification {
  jsonrpc: "2.0";
  method: string;
  params?: unknown;
}

export interface StartOptions {
  home: string;
  broker: string;
  env?: NodeJS.ProcessEnv;
  extraArgs?: string[];
}

export class RpcProcess {
  readonly child: ChildProcess;
  readonly framing: "lsp" | "ndjson";
  private nextId = 1;
  private readonly pending = new Map<number | string, (r: RpcResponse) => void>();
  /** Responses with id null (parse errors, invalid requests) in arrival order. */
  readonly nullIdResponses: RpcResponse[] = [];
  readonly notifications: RpcNotification[] = [];
  private readonly notificationWaiters = new Set<{ match: (n: RpcNotification) => boolean; resolve: (n: RpcNotification) => void }>();
  private buffer = Buffer.alloc(0);
  private readonly stderrWaiters = new Set<() => void>();
  stderr = "";
  stderrLines = 0;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly kind: EndpointKind,
    options: StartOptions,
  ) {
    this.framing = kind === "rpc-ndjson" ? "ndjson" : "lsp";
    const args = kind === "serve" ? ["serve", "--stdio"] : ["rpc", "--framing", this.framing];
    this.child = spawn(process.execPath, [vmcBundle, ...args, "--broker", options.broker, ...(options.extraArgs ?? [])], {
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, VMC_HOME: options.home, VMC_RPC_LOG_RATE: "0", ...options.env },
    });
    this.child.stdin!.on("error", () => undefined);
    this.child.stdout!.on("data", (c: Buffer) => this.onData(c));
    this.child.stderr!.on("data", (c: Buffer) => {
      const s = c.toString();
      this.stderrLines += s.split("\n").length - 1;
      this.stderr = (this.stderr + s).slice(-200_000);
      for (const w of [...this.stderrWaiters]) w();
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** SIGKILLs the process group (the endpoint and anything it spawned). */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid!, "SIGKILL");
    } catch {
      // gone
    }
    await this.exited;
  }

  frame(message: unknown): Buffer {
    const json = JSON.stringify(message);
    return Buffer.from(this.framing === "ndjson" ? `${json}\n` : `Content-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`);
  }

  writeRaw(bytes: Buffer | string): Promise<void> {
    return new Promise((resolve) => {
      if (!this.child.stdin!.write(bytes)) this.child.stdin!.once("drain", () => resolve());
      else resolve();
    });
  }

  /** Sends a request and resolves with its response (result or error), bounded by `timeoutMs`. */
  async call(method: string, params?: unknown, timeoutMs = 30_000, id: number | string = this.nextId++): Promise<RpcResponse> {
    const response = this.response(id, timeoutMs, method);
    await this.writeRaw(this.frame({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) }));
    return response;
  }

  /** Resolves with the response to `id` when it comes. */
  response(id: number | string, timeoutMs = 30_000, what = String(id)): Promise<RpcResponse> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no response to ${what} (id ${id}) within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** The result, or throws with the error. */
  async request<T = unknown>(method: string, params?: unknown, timeoutMs = 30_000): Promise<T> {
    const r = await this.call(method, params, timeoutMs);
    if (r.error) throw Object.assign(new Error(`${method}: ${r.error.code} ${r.error.message}`), { rpc: r.error });
    return r.result as T;
  }

  notify(method: string, params?: unknown): Promise<void> {
    return this.writeRaw(this.frame({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) }));
  }

  nextRequestId(): number {
    return this.nextId++;
  }

  /** Resolves with the first notification (already received or coming) that matches. */
  waitNotification(match: (n: RpcNotification) => boolean, timeoutMs = 30_000, what = "notification"): Promise<RpcNotification> {
    const seen = this.notifications.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (n: RpcNotification) => {
          clearTimeout(timer);
          this.notificationWaiters.delete(waiter);
          resolve(n);
        },
      };
      const timer = setTimeout(() => {
        this.notificationWaiters.delete(waiter);
        reject(new Error(`no ${what} within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      this.notificationWaiters.add(waiter);
    });
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      let body: Buffer;
      if (this.framing === "ndjson") {
        const nl = this.buffer.indexOf(0x0a);
        if (nl < 0) return;
        body = this.buffer.subarray(0, nl);
        this.buffer = this.buffer.subarray(nl + 1);
      } else {
        const end = this.buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        const m = /Content-Length: (\d+)/i.exec(this.buffer.subarray(0, end).toString("latin1"));
        if (!m) throw new Error(`server wrote a bad header: ${this.buffer.subarray(0, end).toString()}`);
        const length = Number(m[1]);
        if (this.buffer.length < end + 4 + length) return;
        body = this.buffer.subarray(end + 4, end + 4 + length);
        this.buffer = this.buffer.subarray(end + 4 + length);
      }
      const message = JSON.parse(body.toString("utf8")) as RpcResponse & RpcNotification;
      if ("method" in message && !("id" in message)) {
        this.notifications.push(message);
        if (this.notifications.length > 5000) this.notifications.splice(0, 1000);
        for (const w of [...this.notificationWaiters]) if (w.match(message)) w.resolve(message);
      } else if (message.id === null) {
        this.nullIdResponses.push(message);
      } else {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        waiter?.(message);
      }
    }
  }

  /** Resolves when the endpoint's log matches `pattern`. */
  waitStderr(pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pattern.test(this.stderr)) return;
        clearTimeout(timer);
        this.stderrWaiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.stderrWaiters.delete(check);
        reject(new Error(`log never matched ${pattern} within ${timeoutMs} ms:\n${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      this.stderrWaiters.add(check);
      check();
    });
  }

  /** Resident set size of the endpoint process, KiB (Linux). */
  rssKiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  }
}

/** Starts the endpoint and waits until it answers `vmc.handshake` (for serve: after `initialize`). */
export async function startEndpoint(kind: EndpointKind, options: StartOptions): Promise<RpcProcess> {
  const p = new RpcProcess(kind, options);
  try {
    if (kind === "serve") {
      const init = await p.call("initialize", { processId: null, rootUri: null, capabilities: {} }, 30_000);
      if (init.error) throw new Error(`initialize failed: ${init.error.message}`);
      await p.notify("initialized", {});
    }
    await p.request("vmc.handshake", { client: "test" }, 30_000);
  } catch (err) {
    await p.kill();
    throw err;
  }
  return p;
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** The error of a response, asserting there is one. */
export function errorOf(r: RpcResponse): { code: number; message: string; data?: unknown } {
  if (!r.error) throw new Error(`expected an error, got result ${JSON.stringify(r.result).slice(0, 500)}`);
  return r.error;
}
