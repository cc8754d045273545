/** Chunk digests and the file digest (SHA-256 over the chunk digests; see protocol/src/transfer.ts). */
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

export function sha256(bytes: Buffer): Buffer {
  return createHash("sha256").update(bytes).digest();
}

const zeroDigests = new Map<number, Buffer>();
/** Digest of `length` zero bytes (cached: holes cost no hashing). */
export function zeroDigest(length: number): Buffer {
  let d = zeroDigests.get(length);
  if (!d) {
    d = sha256(Buffer.alloc(length));
    if (zeroDigests.size < 8) zeroDigests.set(length, d);
  }
  return d;
}

let zeros = Buffer.alloc(0);
/** True when every byte of `bytes` is zero. */
export function isZero(bytes: Buffer): boolean {
  if (zeros.length < bytes.length) zeros = Buffer.alloc(bytes.length);
  return bytes.equals(zeros.subarray(0, bytes.length));
}

/** Running file digest: feed chunk digests in order. */
export class FileDigest {
  private readonly hash = createHash("sha256");
  add(chunkDigest: Buffer): void {
    this.hash.update(chunkDigest);
  }
  hex(): string {
    return this.hash.digest("hex");
  }
}

/** Feeds the digests of the first `length` bytes of an open file into `digest` (resume). */
export async function digestPrefix(fh: FileHandle, length: number, chunkSize: number, digest: FileDigest): Promise<void> {
  const buf = Buffer.allocUnsafe(chunkSize);
  for (let at = 0; at < length; at += chunkSize) {
    const want = Math.min(chunkSize, length - at);
    const { bytesRead } = await fh.read(buf, 0, want, at);
    if (bytesRead !== want) throw new Error(`file shorter than ${length} bytes`);
    const piece = buf.subarray(0, want);
    digest.add(isZero(piece) ? zeroDigest(want) : sha256(piece));
  }
}
