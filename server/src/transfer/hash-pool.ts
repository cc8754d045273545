/**
 * SHA-256 of large chunks on worker threads, so that hashing chunk n+1 overlaps reading, sending
 * or writing chunk n and the main thread only moves bytes. A chunk's memory moves to a worker and
 * back by transfer (no copy). The worker's source is inline, so the esbuild bundles (dist/vmc.mjs,
 * the self-contained dist/agent.mjs) need no second file.
 */
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import type { Worker } from "node:worker_threads";
import { isZero, sha256, zeroDigest } from "./digest";

/** Below this many bytes a round trip to a worker costs more than hashing in place. */
const MIN_OFFLOAD_BYTES = 64 * 1024;
/** Workers with nothing to do end after this long (an idle agent keeps no threads). */
const IDLE_MS = 20_000;

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
let zeros = Buffer.alloc(0);
parentPort.on("message", (m) => {
  if (m.buffers) {
    const hash = createHash("sha256");
    for (const b of m.buffers) hash.update(new Uint8Array(b));
    parentPort.postMessage({ id: m.id, buffers: m.buffers, digest: hash.digest(), zero: false }, m.buffers);
    return;
  }
  const bytes = Buffer.from(m.buffer, m.offset, m.length);
  let zero = false;
  if (m.checkZero) {
    if (zeros.length < bytes.length) zeros = Buffer.alloc(bytes.length);
    zero = bytes.equals(zeros.subarray(0, bytes.length));
  }
  const digest = zero ? null : createHash("sha256").update(bytes).digest();
  parentPort.postMessage({ id: m.id, buffer: m.buffer, digest, zero }, [m.buffer]);
});
`;

export interface ChunkHash {
  /** The chunk's bytes (new view: the memory came back from the worker). */
  bytes: Buffer;
  digest: Buffer;
  /** Every byte is zero (only when asked to check). */
  zero: boolean;
}

export interface PiecesHash {
  /** The pieces (new views: the memory came back from the worker). */
  pieces: Buffer[];
  digest: Buffer;
}

interface Reply {
  id: number;
  buffer?: ArrayBuffer;
  buffers?: ArrayBuffer[];
  digest: Uint8Array | null;
  zero: boolean;
}

interface Job {
  settle: (m: Reply) => void;
  reject: (e: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, Job>;
}

let nextId = 0;

export class HashPool {
  private readonly workers: PoolWorker[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private broken = false;

  /** `size` 0 hashes on the calling thread. Default: `VMC_TRANSFER_HASH_THREADS`, else one per core (at most 4). */
  constructor(private readonly size = defaultSize()) {}

  /**
   * Hashes `bytes` (and checks for all zeros when `checkZero`). Large chunks go to a worker and
   * their ArrayBuffer is DETACHED meanwhile: the caller must hold no other view of it and must use
   * the returned `bytes`. Small or pooled buffers are hashed in place.
   */
  hash(bytes: Buffer, checkZero = false): Promise<ChunkHash> {
    if (bytes.length < MIN_OFFLOAD_BYTES || bytes.buffer.byteLength > bytes.length * 2 + MIN_OFFLOAD_BYTES || this.broken || this.size === 0) return Promise.resolve(inPlace(bytes, checkZero));
    const w = this.pick();
    if (!w) return Promise.resolve(inPlace(bytes, checkZero));
    const id = nextId++;
    const { byteOffset: offset, length } = bytes;
    return new Promise<ChunkHash>((resolve, reject) => {
      const settle = (m: Reply) => {
        const digest = m.digest ? Buffer.from(m.digest.buffer, m.digest.byteOffset, m.digest.byteLength) : zeroDigest(length);
        resolve({ bytes: Buffer.from(m.buffer!, offset, length), digest, zero: m.zero });
      };
      w.jobs.set(id, { settle, reject });
      w.worker.postMessage({ id, buffer: bytes.buffer, offset, length, checkZero }, [bytes.buffer as ArrayBuffer]);
    });
  }

  /**
   * SHA-256 over `pieces` in order. When every piece owns its whole ArrayBuffer they go to a
   * worker (DETACHED meanwhile: use the returned pieces); otherwise they are hashed in place.
   */
  hashPieces(pieces: Buffer[]): Promise<PiecesHash> {
    const total = pieces.reduce((n, b) => n + b.length, 0);
    const owned = pieces.every((b) => b.byteOffset === 0 && b.buffer.byteLength === b.length && b.buffer instanceof ArrayBuffer);
    const w = owned && total >= MIN_OFFLOAD_BYTES && !this.broken && this.size > 0 ? this.pick() : undefined;
    if (!w) {
      const hash = createHash("sha256");
      for (const b of pieces) hash.update(b);
      return Promise.resolve({ pieces, digest: hash.digest() });
    }
    const id = nextId++;
    const buffers = pieces.map((b) => b.buffer as ArrayBuffer);
    return new Promise<PiecesHash>((resolve, reject) => {
      const settle = (m: Reply) => resolve({ pieces: m.buffers!.map((ab) => Buffer.from(ab)), digest: Buffer.from(m.digest!.buffer, m.digest!.byteOffset, m.digest!.byteLength) });
      w.jobs.set(id, { settle, reject });
      w.worker.postMessage({ id, buffers }, buffers);
    });
  }

  /** Ends every worker (pending hashes reject). */
  async close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    await Promise.all(this.workers.splice(0).map((w) => w.worker.terminate()));
  }

  private pick(): PoolWorker | undefined {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    let best = this.workers[0];
    for (const w of this.workers) if (w.jobs.size < best!.jobs.size) best = w;
    if ((!best || best.jobs.size > 0) && this.workers.length < this.size) best = this.spawn() ?? best;
    return best;
  }

  private spawn(): PoolWorker | undefined {
    let worker: Worker;
    try {
      worker = new (workerThreads().Worker)(WORKER_SOURCE, { eval: true });
    } catch {
      this.broken = true;
      return undefined;
    }
    worker.unref();
    const w: PoolWorker = { worker, jobs: new Map() };
    worker.on("message", (m: Reply) => {
      const job = w.jobs.get(m.id);
      if (!job) return;
      w.jobs.delete(m.id);
      job.settle(m);
      if (this.workers.every((x) => x.jobs.size === 0)) this.armIdle();
    });
    const fail = (e: Error) => {
      const i = this.workers.indexOf(w);
      if (i >= 0) this.workers.splice(i, 1);
      for (const job of w.jobs.values()) job.reject(e);
      w.jobs.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`hash worker exited (${code})`)));
    this.workers.push(w);
    return w;
  }

  private armIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => void this.close(), IDLE_MS);
    this.idleTimer.unref();
  }
}

function defaultSize(): number {
  const configured = Number.parseInt(process.env.VMC_TRANSFER_HASH_THREADS ?? "", 10);
  if (Number.isInteger(configured) && configured >= 0) return Math.min(configured, 16);
  return Math.max(1, Math.min(4, availableParallelism()));
}

function inPlace(bytes: Buffer, checkZero: boolean): ChunkHash {
  if (checkZero && isZero(bytes)) return { bytes, digest: zeroDigest(bytes.length), zero: true };
  return { bytes, digest: sha256(bytes), zero: false };
}

/**
 * worker_threads, loaded when the first worker starts rather than at import: the guest agent runs
 * from a V8 startup snapshot (docs/GUEST.md), and Node 20 cannot carry worker_threads' main-thread
 * state through one (its workers then die at their first process.cwd()).
 */
function workerThreads(): typeof import("node:worker_threads") {
  return createRequire(import.meta.url)("node:worker_threads") as typeof import("node:worker_threads");
}

let shared: { pool: HashPool; setting: string | undefined } | undefined;
/** The process's pool (workers start on first use and end when idle; a changed setting takes effect). */
export function hashPool(): HashPool {
  const setting = process.env.VMC_TRANSFER_HASH_THREADS;
  if (!shared || shared.setting !== setting) {
    void shared?.pool.close();
    shared = { pool: new HashPool(), setting };
  }
  return shared.pool;
}
