/**
 * The side that writes: receives a tree into a destination the user chose, trusting nothing the
 * sender says. Every name is confined (paths.ts), every parent is a directory this transfer
 * created or checked with lstat, files are written to a temporary name opened with O_NOFOLLOW
 * and renamed when verified, declared counts and sizes are enforced, and nothing is buffered
 * beyond one chunk.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { lstat, mkdir, open, rename, stat, statfs, symlink, unlink, utimes, lutimes, chmod, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { EntryFrame, FileEndFrame, FrameType, ManifestFrame, type ManifestFrame as Manifest } from "@vmc/protocol/transfer";
import { digestPrefix, FileDigest, sha256, zeroDigest } from "./digest";
import { TransferError } from "./errors";
import { ackPayload, frameName, jsonPayload, parseControl, readDataHeader, readZeroPayload, remoteError, type FrameChannel } from "./frames";
import { DEFAULT_PATH_LIMITS, printable, safeComponents, safeName, symlinkStaysInside, type PathLimits } from "./paths";
import { hashPool } from "./hash-pool";
import { ProgressMeter, type ProgressListener } from "./progress";

export interface ReceiveLimits extends PathLimits {
  /** Most entries (files + dirs + links) one transfer may declare. */
  maxEntries: number;
  /** Most bytes one transfer may declare (also capped by free disk space). */
  maxBytes: number;
  /** Keep symlinks whose target is absolute or leaves the tree (off for data from a guest). */
  allowEscapingSymlinks: boolean;
  /** Bytes of directory paths remembered to check parents (bounds memory on a flood). */
  maxDirPathBytes: number;
}

export const DEFAULT_RECEIVE_LIMITS: ReceiveLimits = {
  ...DEFAULT_PATH_LIMITS,
  maxEntries: 100_000,
  maxBytes: Number.MAX_SAFE_INTEGER,
  allowEscapingSymlinks: false,
  maxDirPathBytes: 64 * 1024 * 1024,
};

/** Chunks received but not yet verified and written. */
const WRITE_BEHIND = 8;

export interface ReceiveOptions {
  /** Where the user asked the copy to go (an existing directory receives it under `sourceName`). */
  destination: string;
  /** The source's base name. */
  sourceName: string;
  chunkSize: number;
  resume: boolean;
  keepPartial: boolean;
  limits?: Partial<ReceiveLimits>;
  idleTimeoutMs?: number;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

export interface ReceiveResult {
  entries: number;
  files: number;
  bytes: number;
  bytesReceived: number;
  /** Absolute path of the root written. */
  root: string;
}

/** Temporary name of a file being received, next to it (also the resume point). */
export function partialName(name: string): string {
  return name.length <= 230 ? `.${name}.vmcpart` : `.vmcpart-${createHash("sha256").update(name).digest("hex").slice(0, 32)}`;
}

interface OpenFile {
  entry: EntryFrame;
  fh: FileHandle;
  tmp: string;
  final: string;
  /** Next offset expected. */
  at: number;
  /** End of the data verified and written so far. */
  written: number;
  digest: FileDigest;
  /** Resuming a finished file in place (no rename). */
  inPlace: boolean;
  /** The last step of the file's verify-and-write chain (chunks are verified and written in order). */
  write: Promise<void>;
  /** Chain steps not yet awaited. */
  steps: Promise<void>[];
}

/** Resolves where the root goes: `destination/sourceName` when destination is a directory. */
export async function resolveRoot(destination: string, sourceName: string): Promise<string> {
  const st = await stat(destination).catch(() => undefined);
  if (st?.isDirectory()) return join(destination, safeName(sourceName));
  const parent = await stat(dirname(destination)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new TransferError("io", `${dirname(destination)} is not a directory`);
  return destination;
}

export async function receiveTree(ch: FrameChannel, opts: ReceiveOptions): Promise<ReceiveResult> {
  const limits: ReceiveLimits = { ...DEFAULT_RECEIVE_LIMITS, ...opts.limits };
  const pool = hashPool();
  const meter = new ProgressMeter(opts.onProgress);
  const root = await resolveRoot(opts.destination, opts.sourceName);
  const dirs = new Set<string>(); // relative paths of directories checked or created here
  let dirPathBytes = 0;
  const dirAttrs: { abs: string; mode: number; mtimeMs: number }[] = [];
  let manifest: Manifest | undefined;
  let nextIndex = 0;
  let declaredBytes = 0;
  let files = 0;
  let bytesReceived = 0;
  let current: OpenFile | undefined;
  let cancelled = false;
  // A chunk that fails verification (on a hash thread, behind the reader) ends the wait for the next frame.
  let pipelineFailed: (e: unknown) => void = () => undefined;
  const pipelineBroken = new Promise<never>((_, reject) => (pipelineFailed = reject));
  pipelineBroken.catch(() => undefined);
  const onAbort = () => {
    cancelled = true;
    ch.destroy(new TransferError("cancelled", "transfer cancelled"));
  };
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort);

  const absOf = (parts: string[]) => (parts.length ? join(root, ...parts) : root);

  const checkParent = (parts: string[], path: string) => {
    const parent = parts.slice(0, -1).join("/");
    if (parts.length > 0 && !dirs.has(parent)) throw new TransferError("unsafe-path", `'${printable(path)}' is not inside a directory of this transfer`);
  };

  const openFile = async (e: EntryFrame, parts: string[]): Promise<OpenFile> => {
    const final = absOf(parts);
    const tmp = join(dirname(final), partialName(basename(final)));
    const size = e.size ?? 0;
    const digest = new FileDigest();
    if (opts.resume) {
      const existing = await lstat(final).catch(() => undefined);
      if (existing?.isFile() && existing.size === size && Math.floor(existing.mtimeMs) === e.mtimeMs) {
        const fh = await open(final, constants.O_RDONLY | constants.O_NOFOLLOW);
        await digestPrefix(fh, size, opts.chunkSize, digest);
        return { entry: e, fh, tmp, final, at: size, digest, written: size, inPlace: true, write: Promise.resolve(), steps: [] };
      }
      const partial = await open(tmp, constants.O_RDWR | constants.O_NOFOLLOW).catch(() => undefined);
      if (partial) {
        const st = await partial.stat();
        if (st.isFile()) {
          const at = st.size >= size ? (st.size === size ? size : 0) : st.size - (st.size % opts.chunkSize);
          await partial.truncate(at);
          await digestPrefix(partial, at, opts.chunkSize, digest);
          return { entry: e, fh: partial, tmp, final, at, written: at, digest, inPlace: false, write: Promise.resolve(), steps: [] };
        }
        await partial.close();
      }
    }
    const fh = await open(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    return { entry: e, fh, tmp, final, at: 0, written: 0, digest, inPlace: false, write: Promise.resolve(), steps: [] };
  };

  const finishFile = async (f: OpenFile, end: { digest: string }) => {
    await f.write;
    const size = f.entry.size ?? 0;
    if (f.at !== size) throw new TransferError("limit", `'${printable(f.entry.path)}': ${f.at} bytes sent, ${size} declared`);
    if (end.digest !== f.digest.hex()) throw new TransferError("checksum", `'${printable(f.entry.path)}': file digest mismatch`);
    if (!f.inPlace) {
      await f.fh.truncate(size);
      await f.fh.chmod(f.entry.mode & 0o777);
      const target = await lstat(f.final).catch(() => undefined);
      if (target?.isDirectory()) throw new TransferError("io", `'${printable(f.entry.path)}' exists as a directory`);
      await f.fh.close();
      await rename(f.tmp, f.final);
    } else {
      await f.fh.close();
      await chmod(f.final, f.entry.mode & 0o777);
    }
    await utimes(f.final, new Date(), new Date(f.entry.mtimeMs));
  };

  try {
    for (;;) {
      const next = ch.next(opts.idleTimeoutMs);
      next.catch(() => undefined);
      const frame = await Promise.race([next, pipelineBroken]);
      switch (frame.type) {
        case FrameType.MANIFEST: {
          if (manifest) throw new TransferError("protocol", "second MANIFEST");
          manifest = parseControl(frame, ManifestFrame, "MANIFEST");
          if (manifest.entries > limits.maxEntries) throw new TransferError("limit", `${manifest.entries} entries declared, at most ${limits.maxEntries} allowed`);
          if (manifest.bytes > limits.maxBytes) throw new TransferError("limit", `${manifest.bytes} bytes declared, at most ${limits.maxBytes} allowed`);
          const fs = await statfs(dirname(root)).catch(() => undefined);
          if (fs && manifest.bytes > fs.bavail * fs.bsize) throw new TransferError("limit", `${manifest.bytes} bytes declared, ${fs.bavail * fs.bsize} free on the destination`);
          meter.bytesTotal = manifest.bytes;
          meter.entriesTotal = manifest.entries;
          break;
        }
        case FrameType.ENTRY: {
          if (!manifest) throw new TransferError("protocol", "ENTRY before MANIFEST");
          if (current) throw new TransferError("protocol", `ENTRY while '${printable(current.entry.path)}' is open`);
          const e = parseControl(frame, EntryFrame, "ENTRY");
          if (e.i !== nextIndex) throw new TransferError("protocol", `entry ${e.i} out of order (expected ${nextIndex})`);
          if (nextIndex >= manifest.entries) throw new TransferError("limit", `more entries than the ${manifest.entries} declared`);
          nextIndex++;
          const parts = safeComponents(e.path, limits);
          if ((parts.length === 0) !== (e.i === 0)) throw new TransferError("protocol", "the first entry, and only it, is the root");
          if (e.i === 0 && e.kind !== manifest.rootKind) throw new TransferError("protocol", "root kind differs from the manifest");
          checkParent(parts, e.path);
          const abs = absOf(parts);
          meter.path = e.path;
          meter.entriesDone++;
          if (e.kind === "dir") {
            const existing = await lstat(abs).catch(() => undefined);
            if (existing && !existing.isDirectory()) throw new TransferError("io", `'${printable(e.path)}' exists and is not a directory`);
            if (!existing) await mkdir(abs, { mode: 0o700 });
            dirPathBytes += e.path.length + 32;
            if (dirPathBytes > limits.maxDirPathBytes) throw new TransferError("limit", "too many directories");
            dirs.add(parts.join("/"));
            dirAttrs.push({ abs, mode: e.mode & 0o777, mtimeMs: e.mtimeMs });
          } else if (e.kind === "symlink") {
            const target = e.target ?? "";
            if (target === "" || target.includes("\0")) throw new TransferError("unsafe-path", `'${printable(e.path)}': empty or invalid link target`);
            if (!limits.allowEscapingSymlinks && !symlinkStaysInside(e.path, target))
              throw new TransferError("unsafe-path", `symlink '${printable(e.path)}' -> '${printable(target)}' points outside the transfer`);
            const existing = await lstat(abs).catch(() => undefined);
            if (existing?.isDirectory()) throw new TransferError("io", `'${printable(e.path)}' exists as a directory`);
            if (existing) await unlink(abs);
            await symlink(target, abs);
            await lutimes(abs, new Date(), new Date(e.mtimeMs)).catch(() => undefined);
          } else {
            if (e.size === undefined) throw new TransferError("protocol", `file '${printable(e.path)}' has no size`);
            declaredBytes += e.size;
            if (declaredBytes > manifest.bytes) throw new TransferError("limit", `files add up to more than the ${manifest.bytes} bytes declared`);
            files++;
            current = await openFile(e, parts);
            if (opts.resume) {
              await ch.send(FrameType.RESUME_AT, jsonPayload({ i: e.i, offset: current.at }));
              meter.add(current.at);
            }
          }
          meter.emit(false);
          break;
        }
        case FrameType.DATA:
        case FrameType.ZERO: {
          const f = current;
          if (!f) throw new TransferError("protocol", `${frameName(frame.type)} outside a file`);
          const isData = frame.type === FrameType.DATA;
          const { index, offset, length, bytes, digest } = isData
            ? (() => {
                const d = readDataHeader(frame.payload);
                return { ...d, length: frame.data ? frame.data.reduce((n, b) => n + b.length, 0) : d.bytes.length };
              })()
            : { ...readZeroPayload(frame.payload), bytes: undefined, digest: undefined };
          const size = f.entry.size ?? 0;
          if (index !== f.entry.i) throw new TransferError("protocol", `data for entry ${index} while entry ${f.entry.i} is open`);
          if (offset !== f.at) throw new TransferError("protocol", `'${printable(f.entry.path)}': data at ${offset}, expected ${f.at}`);
          if (offset + length > size) throw new TransferError("limit", `'${printable(f.entry.path)}': more data than the ${size} bytes declared`);
          const misshapen = isData
            ? length === 0 || length > opts.chunkSize || (offset + length < size && length !== opts.chunkSize)
            : length === 0 || (offset + length < size && length % opts.chunkSize !== 0);
          if (misshapen) throw new TransferError("protocol", `'${printable(f.entry.path)}': chunk of ${length} bytes at ${offset}`);
          f.at = offset + length;
          const end = f.at;
          const index0 = f.entry.i;
          if (bytes && digest) {
            const expected = Buffer.from(digest); // the frame's memory goes to a hash thread
            const fail = () => new TransferError("checksum", `'${printable(f.entry.path)}': chunk at offset ${offset} failed its SHA-256`);
            if (frame.data) {
              const hashed = pool.hashPieces(frame.data);
              hashed.catch(() => undefined);
              f.write = f.write.then(async () => {
                const h = await hashed;
                if (!h.digest.equals(expected)) throw fail();
                f.digest.add(h.digest);
                await writeAllAt(f.fh, h.pieces, offset);
                f.written = end;
                bytesReceived += length;
              });
            } else {
              const hashed = ch.payloadsTransferable ? pool.hash(bytes) : Promise.resolve({ bytes, digest: sha256(bytes) });
              hashed.catch(() => undefined);
              f.write = f.write.then(async () => {
                const h = await hashed;
                if (!h.digest.equals(expected)) throw fail();
                f.digest.add(h.digest);
                await f.fh.write(h.bytes, 0, length, offset);
                ch.recycle(h.bytes);
                f.written = end;
                bytesReceived += length;
              });
            }
          } else {
            f.write = f.write.then(() => {
              for (let c = 0; c < length; c += opts.chunkSize) f.digest.add(zeroDigest(Math.min(opts.chunkSize, length - c)));
            });
          }
          f.write = f.write.then(async () => {
            meter.add(length);
            await ch.send(FrameType.ACK, ackPayload(index0, end)).catch(() => undefined);
          });
          f.write.catch(pipelineFailed);
          // Bounded pipeline: a chunk's hash runs while earlier ones are written, at most WRITE_BEHIND chunks deep.
          f.steps.push(f.write);
          if (f.steps.length > WRITE_BEHIND) await f.steps.shift();
          break;
        }
        case FrameType.FILE_END: {
          const f = current;
          if (!f) throw new TransferError("protocol", "FILE_END outside a file");
          const end = parseControl(frame, FileEndFrame, "FILE_END");
          if (end.i !== f.entry.i) throw new TransferError("protocol", "FILE_END for another entry");
          await finishFile(f, end);
          current = undefined;
          break;
        }
        case FrameType.DONE: {
          if (!manifest) throw new TransferError("protocol", "DONE before MANIFEST");
          if (current) throw new TransferError("protocol", `DONE while '${printable(current.entry.path)}' is open`);
          if (nextIndex !== manifest.entries) throw new TransferError("protocol", `${nextIndex} entries sent, ${manifest.entries} declared`);
          for (const d of dirAttrs.reverse()) {
            await chmod(d.abs, d.mode);
            await utimes(d.abs, new Date(), new Date(d.mtimeMs));
          }
          await ch.send(FrameType.COMPLETE, jsonPayload({ entries: nextIndex, bytes: declaredBytes }));
          meter.bytesDone = declaredBytes;
          meter.emit(true);
          return { entries: nextIndex, files, bytes: declaredBytes, bytesReceived, root };
        }
        case FrameType.ERROR:
        case FrameType.CANCEL:
          throw remoteError(frame);
        default:
          throw new TransferError("protocol", `unexpected ${frameName(frame.type)} frame from the sender`);
      }
    }
  } catch (err) {
    const e = cancelled ? new TransferError("cancelled", "transfer cancelled") : err instanceof TransferError ? err : new TransferError("io", (err as Error).message);
    if (current) {
      const f = current;
      await f.write.catch(() => undefined);
      await f.fh.close().catch(() => undefined);
      const integrity = e.code === "checksum" || e.code === "limit" || e.code === "protocol" || e.code === "unsafe-path";
      if (!f.inPlace && (!opts.keepPartial || (integrity && f.written === 0))) await unlink(f.tmp).catch(() => undefined);
    }
    throw e;
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/** Writes `pieces` back to back at `position` (writev may write less than asked). */
async function writeAllAt(fh: FileHandle, pieces: Buffer[], position: number): Promise<void> {
  let rest = pieces;
  let at = position;
  while (rest.length) {
    const { bytesWritten } = await fh.writev(rest, at);
    if (bytesWritten <= 0) throw new TransferError("io", "the file system accepted no bytes");
    at += bytesWritten;
    let skip = bytesWritten;
    const left: Buffer[] = [];
    for (const b of rest) {
      if (skip >= b.length) skip -= b.length;
      else {
        left.push(skip ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    rest = left;
  }
}
