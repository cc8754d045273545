/**
 * Frame channels: the data channel's frames over a TCP socket or over the bus. The session code
 * (sender.ts, receiver.ts) only sees {@link FrameChannel}.
 */
import type { Socket } from "node:net";
import type { z } from "zod";
import { ACK_PAYLOAD_BYTES, DATA_HEADER_BYTES, ErrorFrame, FrameType, MAX_CONTROL_BYTES, ZERO_PAYLOAD_BYTES } from "@vmc/protocol/transfer";
import { BufferRecycler } from "./buffers";
import { TransferError } from "./errors";

export interface Frame {
  type: number;
  /** The payload; for a frame with `data`, only its first {@link DATA_HEADER_BYTES} bytes. */
  payload: Buffer;
  /**
   * A large DATA frame from a socket: the bytes after the DATA header, as the socket delivered
   * them (not copied into one buffer). Each piece owns its whole ArrayBuffer.
   */
  data?: Buffer[];
}

/** Bytes a frame holds (type byte included). */
export function frameBytes(frame: Frame): number {
  return 1 + frame.payload.length + (frame.data?.reduce((n, b) => n + b.length, 0) ?? 0);
}

export interface FrameChannel {
  /** Queues one frame; resolves when the transport can take more (backpressure). */
  send(type: number, ...parts: Buffer[]): Promise<void>;
  /**
   * {@link send}, and calls `written` once the transport no longer needs `parts` (their memory may
   * then be reused). `written` is called exactly once, also when the send fails.
   */
  sendThen(type: number, parts: Buffer[], written: () => void): Promise<void>;
  /** Hands back the payload of a received frame the reader is done with (its memory is reused). */
  recycle(payload: Buffer): void;
  /**
   * Received payloads own their memory (nothing else holds a view of it), so the reader may
   * transfer it to another thread. False when the transport may share it (the bus client).
   */
  readonly payloadsTransferable: boolean;
  /** The next frame; rejects with a TransferError on close, failure or `timeoutMs` of silence. */
  next(timeoutMs?: number): Promise<Frame>;
  /** Largest accepted frame (type byte + payload); raised once a transfer is authorised. */
  setMaxFrameBytes(n: number): void;
  /** Ends the channel after queued frames are sent. */
  end(): void;
  /** Drops the channel at once; pending and later `next()` calls reject with `reason`. */
  destroy(reason?: TransferError): void;
  readonly destroyed: boolean;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** Receive-side queue shared by the transports: bounded, with waiters and a terminal error. */
export abstract class QueuedChannel implements FrameChannel {
  protected maxFrameBytes = MAX_CONTROL_BYTES + 1;
  private readonly queue: Frame[] = [];
  protected queuedBytes = 0;
  private waiter: { resolve: (f: Frame) => void; reject: (e: TransferError) => void; timer?: NodeJS.Timeout } | undefined;
  private failure: TransferError | undefined;
  destroyed = false;

  abstract send(type: number, ...parts: Buffer[]): Promise<void>;
  abstract end(): void;

  /** Default: `send` copies or writes `parts` before it returns. */
  sendThen(type: number, parts: Buffer[], written: () => void): Promise<void> {
    try {
      return this.send(type, ...parts);
    } finally {
      written();
    }
  }

  recycle(_payload: Buffer): void {}

  get payloadsTransferable(): boolean {
    return false;
  }
  protected abstract onDrained(): void;
  protected abstract teardown(): void;

  setMaxFrameBytes(n: number): void {
    this.maxFrameBytes = n;
  }

  protected deliver(frame: Frame): void {
    if (this.failure) return;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      if (w.timer) clearTimeout(w.timer);
      w.resolve(frame);
      return;
    }
    this.queue.push(frame);
    this.queuedBytes += frameBytes(frame);
  }

  /** Ends the stream with `reason`; frames already queued are still read unless `drop`. */
  protected fail(reason: TransferError, drop = false): void {
    if (drop) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    if (this.failure) return;
    this.failure = reason;
    const w = this.waiter;
    this.waiter = undefined;
    if (w) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(reason);
    }
  }

  next(timeoutMs = DEFAULT_IDLE_TIMEOUT_MS): Promise<Frame> {
    const frame = this.queue.shift();
    if (frame) {
      this.queuedBytes -= frameBytes(frame);
      this.onDrained();
      return Promise.resolve(frame);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new TransferError("protocol", "two readers on one channel"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        const e = new TransferError("timeout", `no data from the peer for ${Math.round(timeoutMs / 1000)} s`);
        reject(e);
        this.destroy(e);
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  destroy(reason = new TransferError("cancelled", "channel closed")): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.fail(reason, true);
    this.teardown();
  }
}

/** Frames over TCP: `u32be length | u8 type | payload`, pausing the socket when the queue is full. */
export class SocketFrameChannel extends QueuedChannel {
  private header = Buffer.alloc(5);
  private headerFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;
  private bodyType = 0;
  private static readonly HIGH_WATER = 16 * 1024 * 1024;
  /** Bytes the socket may hold in user space before `send` waits for it to drain. */
  private static readonly WRITE_HIGH_WATER = 4 * 1024 * 1024;
  /** Frame bodies at least this large come from (and go back to) `bodies`. */
  private static readonly RECYCLE_MIN = 64 * 1024;
  private bodies: BufferRecycler | undefined;
  /** The DATA frame being gathered without copying, and how many of its bytes are still to come. */
  private pieces: Buffer[] | undefined;
  private piecesLeft = 0;

  constructor(private readonly socket: Socket) {
    super();
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.parse(chunk));
    socket.on("error", (e) => this.fail(new TransferError("io", `connection: ${e.message}`)));
    socket.on("close", () => this.fail(new TransferError("io", "the peer closed the connection")));
    socket.on("end", () => this.fail(new TransferError("io", "the peer closed the connection")));
  }

  private parse(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.destroyed) {
      if (this.pieces) {
        at = this.parseData(chunk, at);
        continue;
      }
      if (!this.body) {
        const n = Math.min(5 - this.headerFill, chunk.length - at);
        chunk.copy(this.header, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < 5) return;
        const length = this.header.readUInt32BE(0);
        if (length < 1 || length > this.maxFrameBytes) {
          this.destroy(new TransferError("protocol", `frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes}`));
          return;
        }
        this.bodyType = this.header[4]!;
        this.headerFill = 0;
        this.bodyFill = 0;
        if (this.bodyType === FrameType.DATA && length - 1 >= SocketFrameChannel.RECYCLE_MIN + DATA_HEADER_BYTES) {
          // Large DATA: keep the socket's buffers as they are (no copy); only the header is gathered.
          this.body = Buffer.allocUnsafe(DATA_HEADER_BYTES);
          this.pieces = [];
          this.piecesLeft = length - 1 - DATA_HEADER_BYTES;
          continue;
        }
        this.body = this.bodies && length - 1 >= SocketFrameChannel.RECYCLE_MIN ? this.bodies.take(length - 1) : Buffer.allocUnsafe(length - 1);
      }
      const body = this.body;
      const n = Math.min(body.length - this.bodyFill, chunk.length - at);
      chunk.copy(body, this.bodyFill, at, at + n);
      this.bodyFill += n;
      at += n;
      if (this.bodyFill === body.length) {
        this.body = undefined;
        this.deliver({ type: this.bodyType, payload: body });
        if (this.queuedBytes > SocketFrameChannel.HIGH_WATER) this.socket.pause();
      }
    }
  }

  /** One step of a large DATA frame: header bytes are copied, data bytes kept as socket buffers. */
  private parseData(chunk: Buffer, at: number): number {
    const header = this.body!;
    if (this.bodyFill < header.length) {
      const n = Math.min(header.length - this.bodyFill, chunk.length - at);
      chunk.copy(header, this.bodyFill, at, at + n);
      this.bodyFill += n;
      return at + n;
    }
    const n = Math.min(this.piecesLeft, chunk.length - at);
    const whole = at === 0 && n === chunk.length && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length;
    if (whole) this.pieces!.push(chunk);
    else {
      const piece = Buffer.allocUnsafeSlow(n);
      chunk.copy(piece, 0, at, at + n);
      this.pieces!.push(piece);
    }
    this.piecesLeft -= n;
    if (this.piecesLeft === 0) {
      const data = this.pieces!;
      this.body = undefined;
      this.pieces = undefined;
      this.deliver({ type: FrameType.DATA, payload: header, data });
      if (this.queuedBytes > SocketFrameChannel.HIGH_WATER) this.socket.pause();
    }
    return at + n;
  }

  protected onDrained(): void {
    if (this.socket.isPaused() && this.queuedBytes < SocketFrameChannel.HIGH_WATER / 2) this.socket.resume();
  }

  override setMaxFrameBytes(n: number): void {
    super.setMaxFrameBytes(n);
    if (n - 1 >= SocketFrameChannel.RECYCLE_MIN) this.bodies = new BufferRecycler(n - 1, 8);
  }

  override recycle(payload: Buffer): void {
    this.bodies?.give(payload);
  }

  /** Each frame body is a buffer of its own, filled by copying from the socket's reads. */
  override get payloadsTransferable(): boolean {
    return true;
  }

  send(type: number, ...parts: Buffer[]): Promise<void> {
    return this.sendThen(type, parts, () => undefined);
  }

  override sendThen(type: number, parts: Buffer[], written: () => void): Promise<void> {
    if (this.destroyed || this.socket.destroyed) {
      written();
      return Promise.reject(new TransferError("io", "connection closed"));
    }
    const length = 1 + parts.reduce((n, p) => n + p.length, 0);
    const header = Buffer.allocUnsafe(5);
    header.writeUInt32BE(length, 0);
    header[4] = type;
    this.socket.cork();
    this.socket.write(header);
    parts.forEach((p, i) => this.socket.write(p, i === parts.length - 1 ? () => written() : undefined));
    if (parts.length === 0) written();
    this.socket.uncork();
    if (this.socket.writableLength <= SocketFrameChannel.WRITE_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onDrain = () => {
        this.socket.off("close", onClose);
        resolve();
      };
      const onClose = () => {
        this.socket.off("drain", onDrain);
        reject(new TransferError("io", "connection closed"));
      };
      this.socket.once("drain", onDrain);
      this.socket.once("close", onClose);
    });
  }

  end(): void {
    this.socket.end();
  }

  protected teardown(): void {
    this.socket.destroy();
  }
}

/* ---- payload codecs ---- */

export function jsonPayload(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** Parses a control frame's JSON payload with its schema; throws a protocol TransferError. */
export function parseControl<S extends z.ZodType>(frame: Frame, schema: S, what: string): z.infer<S> {
  if (frame.payload.length > MAX_CONTROL_BYTES) throw new TransferError("protocol", `${what} frame too large`);
  let raw: unknown;
  try {
    raw = JSON.parse(frame.payload.toString("utf8"));
  } catch {
    throw new TransferError("protocol", `${what} frame is not JSON`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new TransferError("protocol", `invalid ${what} frame: ${parsed.error.issues[0]?.message ?? "bad shape"}`);
  return parsed.data;
}

export function frameName(type: number): string {
  return Object.entries(FrameType).find(([, v]) => v === type)?.[0] ?? `0x${type.toString(16)}`;
}

/** An ERROR frame from the peer becomes a remote TransferError. */
export function remoteError(frame: Frame): TransferError {
  if (frame.type === FrameType.CANCEL) return new TransferError("cancelled", "the peer cancelled the transfer", true);
  try {
    const e = parseControl(frame, ErrorFrame, "ERROR");
    return new TransferError(e.code, e.message, true);
  } catch {
    return new TransferError("protocol", "the peer failed with an unreadable error", true);
  }
}

export function dataHeader(index: number, offset: number, digest: Buffer): Buffer {
  const h = Buffer.allocUnsafe(DATA_HEADER_BYTES);
  h.writeUInt32BE(index, 0);
  h.writeBigUInt64BE(BigInt(offset), 4);
  digest.copy(h, 12);
  return h;
}

export function readDataHeader(payload: Buffer): { index: number; offset: number; digest: Buffer; bytes: Buffer } {
  if (payload.length < DATA_HEADER_BYTES) throw new TransferError("protocol", "short DATA frame");
  return {
    index: payload.readUInt32BE(0),
    offset: Number(payload.readBigUInt64BE(4)),
    digest: payload.subarray(12, 44),
    bytes: payload.subarray(DATA_HEADER_BYTES),
  };
}

export function zeroPayload(index: number, offset: number, length: number): Buffer {
  const p = Buffer.allocUnsafe(ZERO_PAYLOAD_BYTES);
  p.writeUInt32BE(index, 0);
  p.writeBigUInt64BE(BigInt(offset), 4);
  p.writeUInt32BE(length, 12);
  return p;
}

export function readZeroPayload(payload: Buffer): { index: number; offset: number; length: number } {
  if (payload.length !== ZERO_PAYLOAD_BYTES) throw new TransferError("protocol", "bad ZERO frame");
  return { index: payload.readUInt32BE(0), offset: Number(payload.readBigUInt64BE(4)), length: payload.readUInt32BE(12) };
}

export function ackPayload(index: number, offset: number): Buffer {
  const p = Buffer.allocUnsafe(ACK_PAYLOAD_BYTES);
  p.writeUInt32BE(index, 0);
  p.writeBigUInt64BE(BigInt(offset), 4);
  return p;
}

export function readAckPayload(payload: Buffer): { index: number; offset: number } {
  if (payload.length !== ACK_PAYLOAD_BYTES) throw new TransferError("protocol", "bad ACK frame");
  return { index: payload.readUInt32BE(0), offset: Number(payload.readBigUInt64BE(4)) };
}

/** Sends ERROR (best effort) and destroys the channel. */
export async function failChannel(ch: FrameChannel, err: TransferError): Promise<void> {
  if (!ch.destroyed && !err.remote) {
    const type = err.code === "cancelled" ? FrameType.CANCEL : FrameType.ERROR;
    const body = err.code === "cancelled" ? { reason: err.message } : { code: err.code, message: err.message };
    await Promise.race([ch.send(type, jsonPayload(body)).catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
  }
  ch.end();
  setTimeout(() => ch.destroy(err), 200).unref();
}
