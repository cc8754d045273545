/** The last `capacity` bytes of a stream, in bounded memory, plus how many bytes it had in all. */
export class ByteTail {
  private chunks: Buffer[] = [];
  private held = 0;
  /** Bytes the stream produced in all. */
  total = 0;

  constructor(readonly capacity: number) {}

  push(data: Buffer): void {
    this.total += data.length;
    if (this.capacity === 0) return;
    if (data.length >= this.capacity) {
      this.chunks = [Buffer.from(data.subarray(data.length - this.capacity))];
      this.held = this.capacity;
      return;
    }
    this.chunks.push(data);
    this.held += data.length;
    while (this.held - (this.chunks[0]?.length ?? 0) >= this.capacity) this.held -= this.chunks.shift()!.length;
    if (this.chunks.length > 64) this.chunks = [this.bytes()];
  }

  /** The bytes held (at most `capacity`). */
  bytes(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.length > this.capacity ? all.subarray(all.length - this.capacity) : all;
  }

  get truncated(): boolean {
    return this.total > Math.min(this.held, this.capacity);
  }
}
