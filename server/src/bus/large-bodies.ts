/**
 * A fast path for large incoming MESSAGE bodies.
 *
 * stompjs parses every incoming byte through a JavaScript array (~35 MiB/s, several bytes of heap
 * per body byte). This filter sits between the socket and stompjs: it walks the frame structure
 * (command line, headers, `content-length` body, NUL), passes small frames through untouched,
 * and for a MESSAGE whose body is at least `threshold` bytes hands stompjs the same frame with an
 * empty body and a `vmc-body-ref` header instead; the body itself is kept, as one Buffer, in
 * `bodies` under that ref until the bus client delivers the message. Heart-beat EOLs pass through.
 * Delivery is synchronous within one `transform` + stompjs parse, so the owner clears `bodies`
 * after each chunk: nothing accumulates.
 */

import { randomBytes } from "node:crypto";

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
/** Longest header block we accept before giving up on the fast path for that frame. */
const MAX_HEAD_BYTES = 256 * 1024;

export const BODY_REF_HEADER = "vmc-body-ref";

type State =
  | { kind: "between" }
  | { kind: "head"; parts: Buffer[]; bytes: number; last: number[] }
  | { kind: "pass"; remaining: number }
  | { kind: "passUntilNul" }
  | { kind: "capture"; head: string; parts: Buffer[]; remaining: number };

export class LargeBodyFilter {
  private state: State = { kind: "between" };
  private nextRef = 0;
  /** Refs are unguessable, so a sender cannot point its message at another message's body with a forged header. */
  private readonly nonce = randomBytes(12).toString("hex");

  constructor(
    private readonly threshold: number,
    readonly bodies: Map<string, Buffer>,
  ) {}

  /** Bytes for stompjs, given bytes from the socket. */
  transform(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      const s = this.state;
      if (s.kind === "between") {
        const c = chunk[at] as number;
        if (c === LF || c === CR || c === NUL) {
          const start = at;
          while (at < chunk.length && (chunk[at] === LF || chunk[at] === CR || chunk[at] === NUL)) at++;
          out.push(chunk.subarray(start, at));
          continue;
        }
        this.state = { kind: "head", parts: [], bytes: 0, last: [] };
        continue;
      }
      if (s.kind === "head") {
        const end = findHeadEnd(chunk, at, s);
        if (end < 0) {
          s.parts.push(chunk.subarray(at));
          s.bytes += chunk.length - at;
          at = chunk.length;
          if (s.bytes > MAX_HEAD_BYTES) {
            out.push(Buffer.concat(s.parts));
            this.state = { kind: "passUntilNul" };
          }
          continue;
        }
        s.parts.push(chunk.subarray(at, end));
        at = end;
        const head = Buffer.concat(s.parts);
        this.onHead(head, out);
        continue;
      }
      if (s.kind === "pass") {
        const n = Math.min(s.remaining, chunk.length - at);
        out.push(chunk.subarray(at, at + n));
        at += n;
        s.remaining -= n;
        if (s.remaining === 0) this.state = { kind: "between" };
        continue;
      }
      if (s.kind === "passUntilNul") {
        const nul = chunk.indexOf(NUL, at);
        const end = nul < 0 ? chunk.length : nul + 1;
        out.push(chunk.subarray(at, end));
        at = end;
        if (nul >= 0) this.state = { kind: "between" };
        continue;
      }
      // capture: the body, then its NUL
      if (s.remaining > 0) {
        const n = Math.min(s.remaining, chunk.length - at);
        s.parts.push(Buffer.from(chunk.subarray(at, at + n)));
        at += n;
        s.remaining -= n;
        continue;
      }
      at++; // the frame's NUL
      const ref = `${this.nonce}.${++this.nextRef}`;
      this.bodies.set(ref, s.parts.length === 1 ? (s.parts[0] as Buffer) : Buffer.concat(s.parts));
      out.push(Buffer.from(`${s.head}${BODY_REF_HEADER}:${ref}\ncontent-length:0\n\n\0`, "utf8"));
      this.state = { kind: "between" };
    }
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /** Forget a partial frame (the connection is gone). */
  reset(): void {
    this.state = { kind: "between" };
  }

  /** `head` runs from the command through the blank line that ends the headers. */
  private onHead(head: Buffer, out: Buffer[]): void {
    const text = head.toString("utf8");
    const lines = text.split("\n").map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
    const command = lines[0];
    let length: number | undefined;
    for (const line of lines.slice(1)) {
      if (line.startsWith("content-length:")) {
        length = Number(line.slice("content-length:".length));
        break;
      }
    }
    if (length === undefined || !Number.isSafeInteger(length) || length < 0) {
      out.push(head);
      this.state = { kind: "passUntilNul" };
      return;
    }
    if (command !== "MESSAGE" || length < this.threshold) {
      out.push(head);
      this.state = { kind: "pass", remaining: length + 1 };
      return;
    }
    const kept = lines
      .slice(0, -2)
      .filter((l, i) => i === 0 || !(l.startsWith("content-length:") || l.startsWith(`${BODY_REF_HEADER}:`)))
      .join("\n");
    this.state = { kind: "capture", head: `${kept}\n`, parts: [], remaining: length };
  }
}

/**
 * Index just past the blank line ending the header block, or -1 when it is not in this chunk.
 * `s.last` carries the previous chunk's last bytes, since the blank line may straddle chunks.
 */
function findHeadEnd(chunk: Buffer, from: number, s: { last: number[] }): number {
  const seen = s.last;
  for (let i = from; i < chunk.length; i++) {
    const c = chunk[i] as number;
    const p1 = i - 1 >= from ? chunk[i - 1] : seen[seen.length - (from - i + 1)];
    const p2 = i - 2 >= from ? chunk[i - 2] : seen[seen.length - (from - i + 2)];
    if (c === LF && (p1 === LF || (p1 === CR && p2 === LF))) return i + 1;
  }
  s.last = [...seen, ...chunk.subarray(Math.max(from, chunk.length - 3))].slice(-3);
  return -1;
}
