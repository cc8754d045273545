/**
 * Chunk-sized buffers kept for reuse: a 1 MiB allocation per chunk costs page faults and GC at
 * hundreds of MB/s; a small free list avoids both.
 */
export class BufferRecycler {
  private readonly free: ArrayBuffer[] = [];

  constructor(
    /** Size of each buffer kept (larger requests are allocated and never kept). */
    readonly size: number,
    /** Most buffers kept free. */
    private readonly keep = 16,
  ) {}

  /** A buffer of `length` bytes (uninitialised) that owns its whole ArrayBuffer when it is pooled. */
  take(length: number): Buffer {
    if (length > this.size) return Buffer.allocUnsafeSlow(length);
    const ab = this.free.pop();
    return ab ? Buffer.from(ab, 0, length) : Buffer.from(Buffer.allocUnsafeSlow(this.size).buffer, 0, length);
  }

  /** Hands a buffer's memory back; the caller holds no view of it any more. */
  give(buf: Buffer): void {
    const ab = buf.buffer;
    // A detached buffer (lent to a worker) has byteLength 0 and is not kept.
    if (ab instanceof ArrayBuffer && ab.byteLength === this.size && this.free.length < this.keep) this.free.push(ab);
  }
}
