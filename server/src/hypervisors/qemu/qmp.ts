/**
 * A QMP (QEMU Machine Protocol) client over a unix socket: JSON objects, one per line. Commands
 * carry an `id` so replies are matched even when asynchronous events arrive in between.
 */
import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly errorClass: string,
    message: string,
  ) {
    super(message);
    this.name = "QmpError";
  }
}

/** Lines longer than this are a broken peer, not QMP. */
const MAX_LINE = 16 * 1024 * 1024;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * Emits `event` (QmpEvent) and `close` (once, when the socket ends: QEMU exited or closed us).
 */
export class QmpClient extends EventEmitter {
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedFlag = false;
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    super();
    let markClosed!: () => void;
    this.closed = new Promise((resolve) => (markClosed = resolve));
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    const finish = () => {
      if (this.closedFlag) return;
      this.closedFlag = true;
      for (const p of this.pending.values()) p.reject(new QmpError("Disconnected", "QEMU closed the monitor connection"));
      this.pending.clear();
      markClosed();
      this.emit("close");
    };
    socket.on("close", finish);
    socket.on("error", finish);
  }

  /** Connects, waits for the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QmpError("Timeout", `no QMP answer on ${path} within ${timeoutMs} ms (another client may hold the monitor)`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    const client = new QmpClient(socket);
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new QmpError("Timeout", `no QMP greeting on ${path} within ${timeoutMs} ms (another client may hold the monitor)`)), timeoutMs);
      client.once("greeting", () => {
        clearTimeout(timer);
        resolve();
      });
      client.once("close", () => {
        clearTimeout(timer);
        reject(new QmpError("Disconnected", "QEMU closed the monitor before its greeting"));
      });
    });
    try {
      await greeting;
    } catch (err) {
      client.close();
      throw err;
    }
    // Pipelined: QMP answers in order, so the next command is sent without waiting for this reply
    // (one round trip less per connection); if negotiation failed, that command fails too.
    client.execute("qmp_capabilities").catch(() => undefined);
    return client;
  }

  /** Lets the process exit while this (idle) connection stays open. */
  unref(): void {
    this.socket.unref();
  }

  ref(): void {
    this.socket.ref();
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedFlag) return Promise.reject(new QmpError("Disconnected", "QMP connection is closed"));
    const id = String(this.nextId++);
    const message = JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id });
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${message}\n`);
    });
  }

  /** Runs a human monitor command; QEMU reports HMP errors as output text, returned here. */
  hmp(commandLine: string): Promise<string> {
    return this.execute<string>("human-monitor-command", { "command-line": commandLine });
  }

  /** Resolves with the first event named `name` for which `match` holds. */
  waitEvent(name: string, timeoutMs: number, match: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !match(e)) return;
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new QmpError("Disconnected", `QEMU went away while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpError("Timeout", `no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      this.on("event", onEvent);
      this.once("close", onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE) {
      this.close();
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ("QMP" in msg) {
      this.emit("greeting", msg.QMP);
      return;
    }
    if (typeof msg.event === "string") {
      this.emit("event", msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) return;
    this.pending.delete(id);
    if ("error" in msg) {
      const error = msg.error as { class?: string; desc?: string };
      pending.reject(new QmpError(error.class ?? "GenericError", error.desc ?? "QMP error"));
    } else {
      pending.resolve(msg.return);
    }
  }
}
