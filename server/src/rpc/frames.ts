/**
 * Splitting a byte stream into JSON-RPC message bodies, for both framings, without ever giving
 * up on the stream: a broken header is skipped up to the next `Content-Length:` (LSP framing) or
 * the next newline (ndjson), and nothing larger than the cap is ever buffered.
 * @packageDocumentation
 */

export type Framing = "lsp" | "ndjson";

export interface FrameSink {
  /** One complete message body (not yet parsed). */
  message(body: Buffer): void;
  /** Bytes that were dropped, and why. */
  dropped(reason: string): void;
}

export interface FrameParser {
  push(chunk: Buffer): void;
  /** A body that turned out not to be JSON: resynchronise inside it if it holds a header. */
  rescue?(body: Buffer): void;
}

export function frameParser(framing: Framing, maxMessageBytes: number, sink: FrameSink): FrameParser {
  return framing === "lsp" ? new LspFrameParser(maxMessageBytes, sink) : new LineFrameParser(maxMessageBytes, sink);
}

const HEADER_NAMES = [Buffer.from("Content-Length:"), Buffer.from("content-length:"), Buffer.from("CONTENT-LENGTH:")];
const HEADER_END = Buffer.from("\r\n\r\n");
const MAX_HEADER_BYTES = 8192;

function onlyWhitespace(b: Buffer): boolean {
  for (const c of b) if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return false;
  return true;
}

/** `Content-Length: N\r\n[other headers]\r\n\r\n<N bytes>` as in LSP, resynchronising on garbage. */
class LspFrameParser implements FrameParser {
  private buffer: Buffer = Buffer.alloc(0);
  private bodyLength: number | undefined;
  /** The rest of a header just reported as bad is skipped without a second report. */
  private skippingReported = false;

  constructor(
    private readonly max: number,
    private readonly sink: FrameSink,
  ) {}

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    this.drain();
  }

  rescue(body: Buffer): void {
    const at = this.findHeader(body, 1);
    if (at < 0) return;
    this.buffer = Buffer.concat([body.subarray(at), this.buffer]);
    this.bodyLength = undefined;
    this.drain();
  }

  private findHeader(b: Buffer, from: number): number {
    let best = -1;
    for (const name of HEADER_NAMES) {
      const i = b.indexOf(name, from);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  private drain(): void {
    for (;;) {
      if (this.bodyLength !== undefined) {
        if (this.buffer.length < this.bodyLength) return;
        const body = this.buffer.subarray(0, this.bodyLength);
        this.buffer = this.buffer.subarray(this.bodyLength);
        this.bodyLength = undefined;
        this.sink.message(body);
        continue;
      }
      if (this.buffer.length === 0) return;
      const start = this.findHeader(this.buffer, 0);
      if (start < 0) {
        // Keep a tail that may be the start of a header split across chunks.
        const keep = Math.min(this.buffer.length, HEADER_NAMES[0]!.length - 1);
        const dropped = this.buffer.subarray(0, this.buffer.length - keep);
        if (dropped.length && !onlyWhitespace(dropped) && !this.skippingReported) this.sink.dropped(`${dropped.length} bytes outside any message (no Content-Length header)`);
        this.buffer = Buffer.from(this.buffer.subarray(this.buffer.length - keep));
        return;
      }
      if (start > 0) {
        const dropped = this.buffer.subarray(0, start);
        if (!onlyWhitespace(dropped) && !this.skippingReported) this.sink.dropped(`${dropped.length} bytes before a Content-Length header`);
        this.buffer = this.buffer.subarray(start);
      }
      this.skippingReported = false;
      const end = this.buffer.indexOf(HEADER_END);
      if (end < 0 || end > MAX_HEADER_BYTES) {
        if (end < 0 && this.buffer.length <= MAX_HEADER_BYTES) return;
        this.sink.dropped(`a header block without an end within ${MAX_HEADER_BYTES} bytes`);
        this.buffer = this.buffer.subarray(1);
        this.skippingReported = true;
        continue;
      }
      const header = this.buffer.subarray(0, end).toString("latin1");
      const length = parseHeader(header);
      if (typeof length === "string") {
        this.sink.dropped(`bad header (${length}): ${JSON.stringify(header.slice(0, 200))}`);
        this.buffer = this.buffer.subarray(1);
        this.skippingReported = true;
        continue;
      }
      if (length > this.max) {
        this.sink.dropped(`a message of ${length} bytes is over the limit of ${this.max}: header skipped`);
        this.buffer = this.buffer.subarray(end + HEADER_END.length);
        continue;
      }
      this.buffer = this.buffer.subarray(end + HEADER_END.length);
      this.bodyLength = length;
    }
  }
}

/** The Content-Length, or why the header is not acceptable. */
function parseHeader(header: string): number | string {
  let length: number | undefined;
  for (const line of header.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) return "a header line without 'name: value'";
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") {
      if (!/^\d{1,15}$/.test(value)) return `Content-Length '${value.slice(0, 40)}' is not a number`;
      length = Number(value);
    } else if (name === "content-type") {
      if (/charset=/i.test(value) && !/charset=["']?utf-?8/i.test(value)) return `unsupported ${value.slice(0, 80)}`;
    } else if (!/^[A-Za-z0-9-]+$/.test(name)) return "a malformed header name";
  }
  return length ?? "no Content-Length";
}

/** One JSON document per line (`\n`, optional `\r`); blank lines are ignored. */
class LineFrameParser implements FrameParser {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;

  constructor(
    private readonly max: number,
    private readonly sink: FrameSink,
  ) {}

  push(chunk: Buffer): void {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl < 0) {
        this.append(chunk.subarray(from));
        return;
      }
      this.append(chunk.subarray(from, nl));
      from = nl + 1;
      this.endLine();
    }
  }

  private append(piece: Buffer): void {
    if (this.discarding || piece.length === 0) return;
    if (this.size + piece.length > this.max) {
      this.sink.dropped(`a line longer than the limit of ${this.max} bytes: skipped to its end`);
      this.parts = [];
      this.size = 0;
      this.discarding = true;
      return;
    }
    this.parts.push(Buffer.from(piece));
    this.size += piece.length;
  }

  private endLine(): void {
    const line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    const wasDiscarding = this.discarding;
    this.parts = [];
    this.size = 0;
    this.discarding = false;
    if (wasDiscarding || onlyWhitespace(line)) return;
    this.sink.message(line[line.length - 1] === 0x0d ? line.subarray(0, -1) : line);
  }
}
