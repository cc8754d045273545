/**
 * A frame-level STOMP client for the conformance suite: it writes exactly the bytes a test asks
 * for and parses what comes back without interpretation (heart-beat EOLs counted, headers kept in
 * order, bodies as Buffers, content-length honoured), so assertions see the broker's real answer.
 */
import { connect, type Socket } from "node:net";

export interface Frame {
  command: string;
  /** First occurrence of each header wins (STOMP 1.2 §"Repeated Header Entries"). */
  headers: Record<string, string>;
  /** Every header line in wire order, after unescaping. */
  headerList: Array<[string, string]>;
  body: Buffer;
}

export type HeaderInput = Record<string, string | number> | Array<[string, string | number]>;

/** STOMP 1.2 header escaping (1.1 lacks `\r`). CONNECT/CONNECTED are never escaped. */
export function escapeHeader(value: string, version = "1.2"): string {
  let out = value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/:/g, "\\c");
  if (version === "1.2") out = out.replace(/\r/g, "\\r");
  return out;
}

function unescapeHeader(value: string): string {
  return value.replace(/\\([\\nrc])/g, (_m, c: string) => ({ "\\": "\\", n: "\n", r: "\r", c: ":" })[c] ?? c);
}

/** Serialises one frame. `escape` applies 1.1/1.2 escaping to header names and values. */
export function encodeFrame(
  command: string,
  headers: HeaderInput = {},
  body: Buffer | string = "",
  opts: { escape?: boolean; version?: string; contentLength?: boolean } = {},
): Buffer {
  const bodyBuf = typeof body === "string" ? Buffer.from(body, "utf8") : body;
  const list: Array<[string, string]> = (Array.isArray(headers) ? headers : Object.entries(headers)).map(([k, v]) => [k, String(v)]);
  if (opts.contentLength && !list.some(([k]) => k === "content-length")) list.push(["content-length", String(bodyBuf.length)]);
  const escape = opts.escape ?? !(command === "CONNECT" || command === "STOMP");
  const lines = list.map(([k, v]) => (escape ? `${escapeHeader(k, opts.version)}:${escapeHeader(v, opts.version)}` : `${k}:${v}`));
  return Buffer.concat([Buffer.from(`${command}\n${lines.map((l) => `${l}\n`).join("")}\n`, "utf8"), bodyBuf, Buffer.from([0])]);
}

export class RawStomp {
  readonly frames: Frame[] = [];
  /** EOLs received between frames (server heart-beats). */
  heartbeats = 0;
  /** Resolves when the socket is closed by either side. */
  readonly closed: Promise<void>;
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private isClosed = false;
  /** Unescape received headers (STOMP ≥ 1.1, except CONNECTED). */
  unescape = true;

  private constructor(readonly socket: Socket) {
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.isClosed = true;
        this.wake();
        resolve();
      });
    });
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
  }

  static open(host: string, port: number, timeoutMs = 5000): Promise<RawStomp> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TCP connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new RawStomp(socket));
      });
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  write(data: Buffer | string): void {
    if (!this.isClosed) this.socket.write(data);
  }

  send(command: string, headers: HeaderInput = {}, body: Buffer | string = "", opts: Parameters<typeof encodeFrame>[3] = {}): void {
    this.write(encodeFrame(command, headers, body, opts));
  }

  /**
   * Removes and returns the first received frame matching `match` (any frame by default),
   * waiting for it up to `timeoutMs`. Rejects on timeout or if the connection closes first.
   */
  async next(match: (f: Frame) => boolean = () => true, timeoutMs = 5000, what = "a frame"): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0]!;
      if (this.isClosed) throw new Error(`connection closed while waiting for ${what}; got ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for a frame with this command. */
  expect(command: string, timeoutMs = 5000): Promise<Frame> {
    return this.next((f) => f.command === command, timeoutMs, command);
  }

  /** Resolves true if the connection closes within `timeoutMs`. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const result = await Promise.race([this.closed.then(() => true), timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Resolves once `count` heart-beats have arrived in total; rejects after `timeoutMs`. */
  async heartbeatsReach(count: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.heartbeats < count) {
      if (this.isClosed) throw new Error(`closed after ${this.heartbeats} heart-beats`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`only ${this.heartbeats} of ${count} heart-beats within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private describe(): string {
    return this.frames.length ? this.frames.map((f) => `${f.command} ${JSON.stringify(f.headers)} ${f.body.toString().slice(0, 200)}`).join(" | ") : "nothing";
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private parse(): void {
    let got = false;
    for (;;) {
      let start = 0;
      while (start < this.buffer.length && (this.buffer[start] === 0x0a || this.buffer[start] === 0x0d)) {
        if (this.buffer[start] === 0x0a) {
          this.heartbeats++;
          got = true;
        }
        start++;
      }
      this.buffer = this.buffer.subarray(start);
      const headEnd = this.buffer.indexOf("\n\n");
      if (headEnd < 0) break;
      const head = this.buffer.subarray(0, headEnd).toString("utf8").split("\n").map((l) => l.replace(/\r$/, ""));
      const command = head[0] ?? "";
      const headerList: Array<[string, string]> = [];
      const raw = !this.unescape || command === "CONNECTED";
      for (const line of head.slice(1)) {
        const colon = line.indexOf(":");
        const k = colon < 0 ? line : line.slice(0, colon);
        const v = colon < 0 ? "" : line.slice(colon + 1);
        headerList.push(raw ? [k, v] : [unescapeHeader(k), unescapeHeader(v)]);
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of headerList) if (!(k in headers)) headers[k] = v;
      const bodyStart = headEnd + 2;
      let bodyEnd: number;
      const length = headers["content-length"];
      if (length !== undefined && /^\d+$/.test(length)) {
        bodyEnd = bodyStart + Number(length);
        if (this.buffer.length < bodyEnd + 1) break;
      } else {
        bodyEnd = this.buffer.indexOf(0, bodyStart);
        if (bodyEnd < 0) break;
      }
      this.frames.push({ command, headers, headerList, body: Buffer.from(this.buffer.subarray(bodyStart, bodyEnd)) });
      this.buffer = this.buffer.subarray(bodyEnd + 1);
      got = true;
    }
    if (got) this.wake();
  }
}

export interface StompSession {
  client: RawStomp;
  connected: Frame;
}

/**
 * Opens a connection and sends CONNECT (or STOMP) with `headers`; resolves with the CONNECTED
 * frame, rejects with the ERROR frame's message otherwise.
 */
export async function openSession(
  host: string,
  port: number,
  headers: Record<string, string> = {},
  command: "CONNECT" | "STOMP" = "CONNECT",
): Promise<StompSession> {
  const client = await RawStomp.open(host, port);
  const all = { "accept-version": "1.2", host: "/", login: "guest", passcode: "guest", "heart-beat": "0,0", ...headers };
  for (const k of Object.keys(all) as Array<keyof typeof all>) if (all[k] === "") delete all[k];
  client.send(command, all);
  const reply = await client.next((f) => f.command === "CONNECTED" || f.command === "ERROR", 10_000, "CONNECTED");
  if (reply.command === "ERROR") {
    client.close();
    throw new Error(`CONNECT refused: ${reply.headers.message ?? ""} ${reply.body.toString()}`);
  }
  return { client, connected: reply };
}
