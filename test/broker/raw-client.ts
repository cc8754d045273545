/**
 * A deliberately small STOMP client over a raw socket, so broker tests control every byte
 * (bad frames, escaping, EOL styles, heart-beats) and see exactly what comes back.
 */
import { connect, type Socket } from "node:net";

export interface ReceivedFrame {
  command: string;
  headers: Record<string, string>;
  body: Buffer;
}

export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private frames: ReceivedFrame[] = [];
  private waiters: Array<() => void> = [];
  /** Count of heart-beat EOLs received between frames. */
  heartbeats = 0;
  closed = false;
  private readonly closedPromise: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (c: Buffer) => this.onData(c));
    this.closedPromise = new Promise((resolve) => socket.on("close", () => {
      this.closed = true;
      resolve();
      this.wake();
    }));
    socket.on("error", () => {});
  }

  static open(port: number, host = "127.0.0.1"): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port, noDelay: true });
      s.once("connect", () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  /** Opens and logs in (guest/guest unless given); resolves after CONNECTED. */
  static async login(port: number, headers: Record<string, string> = {}): Promise<RawClient> {
    const c = await RawClient.open(port);
    c.frame("CONNECT", { "accept-version": "1.2", host: "/", login: "guest", passcode: "guest", ...headers });
    const f = await c.next();
    if (f.command !== "CONNECTED") throw new Error(`expected CONNECTED, got ${f.command}: ${f.headers.message ?? ""} ${f.body.toString()}`);
    return c;
  }

  raw(data: string | Buffer): void {
    if (!this.closed) this.socket.write(data);
  }

  /** Sends a frame; header values are written as given (escape them yourself when testing escaping). */
  frame(command: string, headers: Record<string, string> = {}, body?: string | Buffer): void {
    let head = command + "\n";
    for (const [k, v] of Object.entries(headers)) head += `${k}:${v}\n`;
    const b = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body);
    if (body !== undefined && !("content-length" in headers)) head += `content-length:${b.length}\n`;
    this.raw(Buffer.concat([Buffer.from(head + "\n"), b, Buffer.of(0)]));
  }

  /** The next frame, failing after `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<ReceivedFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.shift();
      if (f) return f;
      if (this.closed) throw new Error("connection closed while waiting for a frame");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolves true if no frame arrives within `ms` (for "nothing more is delivered" checks). */
  async quiet(ms: number): Promise<boolean> {
    try {
      const f = await this.next(ms);
      this.frames.unshift(f);
      return false;
    } catch {
      return this.frames.length === 0;
    }
  }

  /** Waits for the connection to close; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closedPromise,
      new Promise<void>((_, reject) => (t = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs))),
    ]).finally(() => clearTimeout(t));
  }

  /** Sends with a receipt and waits for it. */
  async withReceipt(command: string, headers: Record<string, string>, body?: string | Buffer): Promise<void> {
    const id = "r-" + Math.random().toString(36).slice(2);
    this.frame(command, { ...headers, receipt: id }, body);
    const f = await this.next();
    if (f.command !== "RECEIPT" || f.headers["receipt-id"] !== id) throw new Error(`expected RECEIPT ${id}, got ${f.command} ${JSON.stringify(f.headers)} ${f.body.toString()}`);
  }

  /** Sends with a receipt; returns the frames (e.g. MESSAGEs) that arrived before the RECEIPT. */
  async untilReceipt(command: string, headers: Record<string, string>, body?: string | Buffer): Promise<ReceivedFrame[]> {
    const id = "r-" + Math.random().toString(36).slice(2);
    this.frame(command, { ...headers, receipt: id }, body);
    const others: ReceivedFrame[] = [];
    for (;;) {
      const f = await this.next();
      if (f.command === "RECEIPT" && f.headers["receipt-id"] === id) return others;
      if (f.command === "ERROR") throw new Error(`ERROR ${f.headers.message}: ${f.body.toString()}`);
      others.push(f);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const cb of w) cb();
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      let p = 0;
      while (p < this.buf.length && (this.buf[p] === 10 || this.buf[p] === 13)) {
        if (this.buf[p] === 10) this.heartbeats++;
        p++;
      }
      this.buf = this.buf.subarray(p);
      const end = this.buf.indexOf("\n\n");
      if (end < 0) break;
      const lines = this.buf.toString("utf8", 0, end).split("\n");
      const command = lines.shift()!;
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(":");
        const k = l.slice(0, i);
        if (!(k in headers)) headers[k] = l.slice(i + 1);
      }
      const start = end + 2;
      let stop: number;
      if (headers["content-length"] !== undefined) {
        stop = start + Number(headers["content-length"]);
        if (this.buf.length < stop + 1) break;
      } else {
        stop = this.buf.indexOf(0, start);
        if (stop < 0) break;
      }
      this.frames.push({ command, headers, body: Buffer.from(this.buf.subarray(start, stop)) });
      this.buf = this.buf.subarray(stop + 1);
    }
    this.wake();
  }
}
