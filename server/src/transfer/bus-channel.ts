/**
 * Frames over the bus (the fallback when the data endpoint cannot be reached): each frame is one
 * STOMP message with a binary body (type byte + payload) and the headers in XferFrameHeaders.
 */
import { XFER_FRAME_TYPE, XferFrameHeaders } from "@vmc/protocol/bus";
import { TransferError } from "./errors";
import { QueuedChannel } from "./frames";

/** Publishes one frame body with its headers; resolves when the bus can take more. */
export type PublishFrame = (destination: string, headers: Record<string, string>, body: Buffer) => Promise<void>;

export class BusFrameChannel extends QueuedChannel {
  private sendSeq = 0;
  private recvSeq = 0;

  constructor(
    private readonly transferId: string,
    private readonly destination: string,
    private readonly publish: PublishFrame,
    /** Frames waiting to be read beyond this many bytes mean the peer ignores the window. */
    private readonly maxQueuedBytes: number,
    private readonly onClose: () => void = () => undefined,
  ) {
    super();
  }

  /** Called by whoever receives the transfer's bus messages, in arrival order. */
  push(headers: Record<string, string>, body: Uint8Array): void {
    if (this.destroyed) return;
    const seq = Number(headers[XferFrameHeaders.seq]);
    if (seq !== this.recvSeq) return this.destroy(new TransferError("protocol", `bus frame ${seq} arrived, expected ${this.recvSeq}`));
    this.recvSeq++;
    if (body.byteLength < 1 || body.byteLength > this.maxFrameBytes) return this.destroy(new TransferError("protocol", `bus frame of ${body.byteLength} bytes`));
    const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    this.deliver({ type: buf[0]!, payload: buf.subarray(1) });
    if (this.queuedBytes > this.maxQueuedBytes) this.destroy(new TransferError("limit", "the peer sent beyond its window"));
  }

  async send(type: number, ...parts: Buffer[]): Promise<void> {
    if (this.destroyed) throw new TransferError("io", "channel closed");
    const body = Buffer.concat([Buffer.of(type), ...parts]);
    const headers = {
      [XferFrameHeaders.type]: XFER_FRAME_TYPE,
      [XferFrameHeaders.transfer]: this.transferId,
      [XferFrameHeaders.seq]: String(this.sendSeq++),
      expiration: "120000",
    };
    await this.publish(this.destination, headers, body);
  }

  protected onDrained(): void {}

  end(): void {
    this.onClose();
  }

  protected teardown(): void {
    this.onClose();
  }
}
