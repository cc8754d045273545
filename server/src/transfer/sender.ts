/** The side that has the files: streams a plan over a frame channel, pipelined within a window. */
import { open } from "node:fs/promises";
import { CompleteFrame, FrameType, ManifestFrame, ResumeAtFrame } from "@vmc/protocol/transfer";
import { BufferRecycler } from "./buffers";
import { digestPrefix, FileDigest, zeroDigest } from "./digest";
import { TransferError } from "./errors";
import { dataHeader, frameName, jsonPayload, parseControl, readAckPayload, remoteError, zeroPayload, type Frame, type FrameChannel } from "./frames";
import { hashPool, type ChunkHash } from "./hash-pool";
import { ProgressMeter, type ProgressListener } from "./progress";
import type { TransferPlan } from "./walk";

/** Largest hole one ZERO frame covers. */
const MAX_ZERO_SPAN = 1024 * 1024 * 1024;
/** Chunks being read and hashed while one is sent: enough to keep every hash thread busy. */
const READ_AHEAD = 6;

export interface SendOptions {
  chunkSize: number;
  /** Ask the receiver where to continue each file (resume). */
  resume: boolean;
  /** Unacknowledged bytes allowed in flight. */
  windowBytes?: number;
  idleTimeoutMs?: number;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

export interface SendResult {
  entries: number;
  files: number;
  bytes: number;
  /** Bytes that travelled as data (not resumed, not holes). */
  bytesSent: number;
}

/** Sends every entry of `plan`, then waits for the receiver's COMPLETE. */
export async function sendPlan(ch: FrameChannel, plan: TransferPlan, opts: SendOptions): Promise<SendResult> {
  const windowBytes = opts.windowBytes ?? 16 * 1024 * 1024;
  const pool = hashPool();
  const buffers = new BufferRecycler(opts.chunkSize, READ_AHEAD + 8);
  const meter = new ProgressMeter(opts.onProgress);
  meter.bytesTotal = plan.bytes;
  meter.entriesTotal = plan.entries.length;
  let sentEnd = 0; // bytes of file data sent (positions, across files)
  let ackedEnd = 0;
  let failure: TransferError | undefined;
  let windowWaiter: (() => void) | undefined;
  let resumeWaiter: { i: number; resolve: (offset: number) => void } | undefined;
  let complete: ((c: CompleteFrame) => void) | undefined;
  const completed = new Promise<CompleteFrame>((r) => (complete = r));
  // Pending awaits that a failure must interrupt; each leaves the set when it settles (bounded memory on huge files).
  const failWaiters = new Set<(e: TransferError) => void>();
  // Per file still being acknowledged: where its bytes start on the position line shared by all files.
  const fileBase = new Map<number, number>();

  const stop = (e: TransferError) => {
    if (failure) return;
    failure = e;
    for (const reject of failWaiters) reject(e);
    failWaiters.clear();
    windowWaiter?.();
  };
  const onAbort = () => stop(new TransferError("cancelled", "transfer cancelled"));
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort);

  const reader = (async () => {
    for (;;) {
      const f: Frame = await ch.next(opts.idleTimeoutMs);
      switch (f.type) {
        case FrameType.ACK: {
          const { index, offset } = readAckPayload(f.payload);
          const base = fileBase.get(index);
          if (base === undefined) throw new TransferError("protocol", `ACK for entry ${index}, which is not a file being sent`);
          for (const i of fileBase.keys()) if (i < index) fileBase.delete(i);
          const pos = base + offset;
          if (pos > sentEnd) throw new TransferError("protocol", "ACK beyond what was sent");
          if (pos > ackedEnd) {
            meter.add(pos - ackedEnd);
            ackedEnd = pos;
          }
          const w = windowWaiter;
          windowWaiter = undefined;
          w?.();
          break;
        }
        case FrameType.RESUME_AT: {
          const r = parseControl(f, ResumeAtFrame, "RESUME_AT");
          if (!resumeWaiter || resumeWaiter.i !== r.i) throw new TransferError("protocol", "unexpected RESUME_AT");
          const w = resumeWaiter;
          resumeWaiter = undefined;
          w.resolve(r.offset);
          break;
        }
        case FrameType.COMPLETE:
          complete!(parseControl(f, CompleteFrame, "COMPLETE"));
          return;
        case FrameType.ERROR:
        case FrameType.CANCEL:
          throw remoteError(f);
        default:
          throw new TransferError("protocol", `unexpected ${frameName(f.type)} frame from the receiver`);
      }
    }
  })();
  reader.catch((e: unknown) => stop(e instanceof TransferError ? e : new TransferError("io", String(e))));

  const waitWindow = async () => {
    while (!failure && sentEnd - ackedEnd > windowBytes) await new Promise<void>((r) => (windowWaiter = r));
    if (failure) throw failure;
  };
  const race = <T>(p: Promise<T>): Promise<T> => {
    if (failure) {
      // `p` is already under way (a send on a closed channel rejects): observe it, or its
      // rejection goes unhandled and takes the whole agent down.
      p.catch(() => undefined);
      return Promise.reject(failure);
    }
    return new Promise<T>((resolve, reject) => {
      failWaiters.add(reject);
      p.then(
        (v) => (failWaiters.delete(reject), resolve(v)),
        (e: unknown) => (failWaiters.delete(reject), reject(e)),
      );
    });
  };

  let files = 0;
  let bytesSent = 0;
  try {
    const manifest: ManifestFrame = { entries: plan.entries.length, bytes: plan.bytes, rootKind: plan.rootKind };
    await race(ch.send(FrameType.MANIFEST, jsonPayload(manifest)));
    for (const entry of plan.entries) {
      if (failure) throw failure;
      const e = entry.frame;
      meter.path = e.path;
      await race(ch.send(FrameType.ENTRY, jsonPayload(e)));
      meter.entriesDone++;
      if (e.kind !== "file") continue;
      files++;
      const size = e.size ?? 0;
      fileBase.set(e.i, sentEnd);
      let start = 0;
      if (opts.resume) {
        start = await race(new Promise<number>((resolve) => (resumeWaiter = { i: e.i, resolve })));
        if (start > size || (start % opts.chunkSize !== 0 && start !== size)) throw new TransferError("protocol", `bad resume offset ${start} for '${e.path}'`);
        sentEnd += start;
        ackedEnd += start;
        meter.add(start);
      }
      const fh = await open(entry.abs, "r");
      // Chunks read and hashed ahead of the one being sent (on the hash pool's threads).
      const ahead: Promise<ChunkHash>[] = [];
      try {
        const digest = new FileDigest();
        if (start > 0) await digestPrefix(fh, start, opts.chunkSize, digest);
        if (entry.allHole) {
          const span = Math.max(1, Math.floor(MAX_ZERO_SPAN / opts.chunkSize)) * opts.chunkSize;
          for (let at = start; at < size; at += span) {
            const length = Math.min(span, size - at);
            for (let c = 0; c < length; c += opts.chunkSize) digest.add(zeroDigest(Math.min(opts.chunkSize, length - c)));
            await waitWindow();
            await race(ch.send(FrameType.ZERO, zeroPayload(e.i, at, length)));
            sentEnd += length;
          }
          start = size;
        }
        const prepare = async (at: number): Promise<ChunkHash> => {
          const want = Math.min(opts.chunkSize, size - at);
          const buf = buffers.take(want);
          const { bytesRead } = await fh.read(buf, 0, want, at);
          if (bytesRead !== want) throw new TransferError("io", `'${e.path}' shrank while it was being sent`);
          return pool.hash(buf, true);
        };
        let nextRead = start;
        const fill = () => {
          while (ahead.length < READ_AHEAD && nextRead < size && !failure) {
            const p = prepare(nextRead);
            p.catch(() => undefined);
            ahead.push(p);
            nextRead += opts.chunkSize;
          }
        };
        for (let at = start; at < size; at += opts.chunkSize) {
          if (failure) throw failure;
          fill();
          const c = await race(ahead.shift()!);
          fill();
          await waitWindow();
          const length = c.bytes.length;
          digest.add(c.digest);
          if (c.zero) {
            buffers.give(c.bytes);
            await race(ch.send(FrameType.ZERO, zeroPayload(e.i, at, length)));
          } else {
            await race(ch.sendThen(FrameType.DATA, [dataHeader(e.i, at, c.digest), c.bytes], () => buffers.give(c.bytes)));
            bytesSent += length;
          }
          sentEnd += length;
        }
        await race(ch.send(FrameType.FILE_END, jsonPayload({ i: e.i, digest: digest.hex() })));
      } finally {
        await Promise.allSettled(ahead);
        await fh.close();
      }
    }
    await race(ch.send(FrameType.DONE, jsonPayload({})));
    const done = await race(completed);
    if (done.entries !== plan.entries.length) throw new TransferError("protocol", `receiver wrote ${done.entries} of ${plan.entries.length} entries`);
    meter.bytesDone = plan.bytes;
    meter.emit(true);
    return { entries: plan.entries.length, files, bytes: plan.bytes, bytesSent };
  } catch (err) {
    const e = failure ?? (err instanceof TransferError ? err : new TransferError("io", (err as Error).message));
    stop(e);
    throw e;
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
}
