import type { OutputTail } from "@vmc/protocol/bus";

/** The last `capacity` bytes of a stream, and how many bytes it produced in all. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private total = 0;

  constructor(private readonly capacity: number) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.capacity === 0) return;
    if (chunk.length >= this.capacity) {
      this.chunks = [Buffer.from(chunk.subarray(chunk.length - this.capacity))];
      this.bytes = this.capacity;
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - (this.chunks[0]?.length ?? 0) >= this.capacity) this.bytes -= this.chunks.shift()?.length ?? 0;
  }

  result(): OutputTail {
    const all = Buffer.concat(this.chunks);
    const data = all.length > this.capacity ? all.subarray(all.length - this.capacity) : all;
    return { data: data.toString("base64"), totalBytes: this.total, truncated: data.length < this.total };
  }
}
