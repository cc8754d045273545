/**
 * Incremental STOMP frame parser over Buffers. Headers are located with indexOf and decoded
 * once; bodies with `content-length` are collected as slices and joined once; without it the
 * parser scans only new bytes for the NUL. Every limit violation is reported, never thrown.
 */
import { clientCommands, unescapeHeader, type Frame, type StompVersion } from "./frame";

export interface ParserLimits {
  /** Bytes of command line + headers + blank line. */
  maxHeaderBytes: number;
  maxHeaders: number;
  maxBodyBytes: number;
}

export class ProtocolError extends Error {
  constructor(
    readonly summary: string,
    detail: string,
  ) {
    super(detail);
  }
}

interface PendingBody {
  command: string;
  headers: Map<string, string>;
  /** Expected body length, or -1 when terminated by NUL. */
  length: number;
  chunks: Buffer[];
  have: number;
}

export class FrameParser {
  /** Negotiated version; CONNECT/STOMP frames are never unescaped. */
  version: StompVersion = "1.2";
  private head: Buffer | null = null;
  private body: PendingBody | null = null;
  private stopped = false;

  constructor(
    private readonly limits: ParserLimits,
    private readonly onFrame: (frame: Frame) => void,
    private readonly onHeartbeat: () => void,
  ) {}

  /** Bytes held for an incomplete frame (for memory accounting). */
  get buffered(): number {
    return (this.head?.length ?? 0) + (this.body?.have ?? 0);
  }

  /** Drops anything buffered and ignores further input (the connection is closing). */
  stop(): void {
    this.stopped = true;
    this.head = null;
    this.body = null;
  }

  /** Feeds bytes; throws ProtocolError on malformed input (the caller answers ERROR and closes). */
  push(data: Buffer): void {
    if (this.stopped) return;
    let buf = data;
    if (this.head) {
      buf = Buffer.concat([this.head, data]);
      this.head = null;
    }
    let pos = 0;
    const len = buf.length;
    while (pos < len && !this.stopped) {
      const b = this.body;
      if (b) {
        if (b.length >= 0) {
          const take = Math.min(b.length + 1 - b.have, len - pos);
          b.chunks.push(buf.subarray(pos, pos + take));
          b.have += take;
          pos += take;
          if (b.have === b.length + 1) {
            const all = b.chunks.length === 1 ? b.chunks[0]! : Buffer.concat(b.chunks, b.have);
            if (all[b.length] !== 0) throw new ProtocolError("Bad frame", "frame body is not followed by NUL at content-length");
            this.body = null;
            this.onFrame({ command: b.command, headers: b.headers, body: all.subarray(0, b.length) });
          }
        } else {
          const nul = buf.indexOf(0, pos);
          const end = nul < 0 ? len : nul;
          if (b.have + (end - pos) > this.limits.maxBodyBytes) {
            throw new ProtocolError("Frame too large", `body exceeds ${this.limits.maxBodyBytes} bytes`);
          }
          if (end > pos) b.chunks.push(buf.subarray(pos, end));
          b.have += end - pos;
          pos = end;
          if (nul >= 0) {
            pos = nul + 1;
            this.body = null;
            const all = b.chunks.length === 1 ? b.chunks[0]! : Buffer.concat(b.chunks, b.have);
            this.onFrame({ command: b.command, headers: b.headers, body: all });
          }
        }
        continue;
      }
      const c = buf[pos];
      if (c === 10) {
        pos++;
        this.onHeartbeat();
        continue;
      }
      if (c === 13) {
        if (pos + 1 >= len) break;
        if (buf[pos + 1] !== 10) throw new ProtocolError("Bad frame", "CR not followed by LF between frames");
        pos += 2;
        this.onHeartbeat();
        continue;
      }
      const end = this.findHeadEnd(buf, pos);
      if (end < 0) break;
      this.parseHead(buf, pos, end);
      pos = end;
    }
    if (pos < len && !this.body && !this.stopped) this.head = Buffer.from(buf.subarray(pos));
  }

  /** Index just past the blank line ending the headers, or -1 when more bytes are needed. */
  private findHeadEnd(buf: Buffer, start: number): number {
    const limit = Math.min(buf.length, start + this.limits.maxHeaderBytes);
    let p = start;
    const first = buf.indexOf(10, start);
    if (first >= 0 && first < limit) {
      const command = lineText(buf, start, first);
      if (!clientCommands.has(command)) throw new ProtocolError("Bad command", `unknown or malformed command '${command.slice(0, 40)}'`);
    } else if (buf.length - start > 16) {
      // No command is longer than 11 bytes: a longer first line is garbage, say so now.
      const command = buf.toString("latin1", start, start + 16);
      throw new ProtocolError("Bad command", `unknown or malformed command '${command}…'`);
    }
    for (;;) {
      const i = buf.indexOf(10, p);
      if (i < 0 || i >= limit) {
        if (buf.length - start >= this.limits.maxHeaderBytes) {
          throw new ProtocolError("Frame too large", `headers exceed ${this.limits.maxHeaderBytes} bytes`);
        }
        return -1;
      }
      const n = buf[i + 1];
      if (n === 10) return i + 2;
      if (n === 13) {
        if (i + 2 >= buf.length) return -1;
        if (buf[i + 2] === 10) return i + 3;
      }
      if (n === undefined) return -1;
      p = i + 1;
    }
  }

  private parseHead(buf: Buffer, start: number, end: number): void {
    let nl = buf.indexOf(10, start);
    const command = lineText(buf, start, nl);
    if (!clientCommands.has(command)) {
      throw new ProtocolError("Bad command", `unknown or malformed command '${command.slice(0, 40)}'`);
    }
    const version: StompVersion = command === "CONNECT" || command === "STOMP" ? "1.0" : this.version;
    const headers = new Map<string, string>();
    let count = 0;
    let p = nl + 1;
    for (;;) {
      nl = buf.indexOf(10, p);
      if (nl < 0 || nl >= end) break;
      const line = lineText(buf, p, nl);
      p = nl + 1;
      if (line === "") break;
      if (++count > this.limits.maxHeaders) throw new ProtocolError("Too many headers", `more than ${this.limits.maxHeaders} headers`);
      const colon = line.indexOf(":");
      if (colon <= 0) throw new ProtocolError("Bad header", `header line without a name and colon: '${line.slice(0, 40)}'`);
      const name = unescapeHeader(line.slice(0, colon), version);
      const value = unescapeHeader(line.slice(colon + 1), version);
      if (name === undefined || value === undefined) throw new ProtocolError("Bad header", "undefined escape sequence in header");
      if (!headers.has(name)) headers.set(name, value);
    }
    const cl = headers.get("content-length");
    let length = -1;
    if (cl !== undefined) {
      if (!/^\d{1,12}$/.test(cl.trim())) throw new ProtocolError("Bad header", `invalid content-length '${cl.slice(0, 20)}'`);
      length = Number(cl.trim());
      if (length > this.limits.maxBodyBytes) throw new ProtocolError("Frame too large", `content-length ${length} exceeds ${this.limits.maxBodyBytes} bytes`);
    }
    this.body = { command, headers, length, chunks: [], have: 0 };
  }
}

function lineText(buf: Buffer, start: number, nl: number): string {
  const stop = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
  return buf.toString("utf8", start, stop);
}
