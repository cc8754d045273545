/**
 * Append-only journal of persistent queue state in `<data>/journal.log`.
 *
 * Record: u32 payload length, u32 CRC-32 of the payload, payload. Payload starts with a type
 * byte: 1 ENQUEUE (u48 id, f64 expiresAt, u32 meta length, meta JSON {q,d,h}, body),
 * 2 REMOVE (u48 id), 3 DECLARE (JSON {q,a,b}: queue, arguments, topic binding key of a durable
 * topic subscription), 4 DELETE (JSON {q}).
 *
 * Writes are batched per event-loop turn (group commit). `barrier(cb)` calls back once every
 * record appended so far is written AND fdatasync'ed; the broker sends RECEIPTs through it, so a
 * receipted persistent SEND or ACK is on disk. Records without a waiting receipt are written
 * within one turn (they survive kill -9) and fsynced at the latest one second later.
 */
import { closeSync, fdatasync, fsyncSync, openSync, readFileSync, renameSync, writeSync, writev, existsSync, ftruncateSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import type { QueueArgs } from "./queue";

const ENQUEUE = 1;
const REMOVE = 2;
const DECLARE = 3;
const DELETE = 4;

export interface JournaledMessage {
  id: number;
  queue: string;
  destination: string;
  headers: Array<[string, string]>;
  body: Buffer;
  expiresAt: number;
}

export interface RecoveredQueue {
  args: QueueArgs;
  /** Routing key a durable topic subscription's queue is bound with. */
  binding?: string;
}

export interface Recovered {
  queues: Map<string, RecoveredQueue>;
  /** Live messages in journal order. */
  messages: JournaledMessage[];
  maxId: number;
  /** Bytes dropped from a torn tail (0 after a clean shutdown). */
  tornBytes: number;
}

function record(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(8 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt32LE(crc32(payload), 4);
  payload.copy(out, 8);
  return out;
}

export function enqueueRecord(m: JournaledMessage): Buffer {
  const meta = Buffer.from(JSON.stringify({ q: m.queue, d: m.destination, h: m.headers }));
  const p = Buffer.allocUnsafe(1 + 6 + 8 + 4 + meta.length + m.body.length);
  p[0] = ENQUEUE;
  p.writeUIntLE(m.id, 1, 6);
  p.writeDoubleLE(m.expiresAt, 7);
  p.writeUInt32LE(meta.length, 15);
  meta.copy(p, 19);
  m.body.copy(p, 19 + meta.length);
  return record(p);
}

function removeRecord(id: number): Buffer {
  const p = Buffer.allocUnsafe(7);
  p[0] = REMOVE;
  p.writeUIntLE(id, 1, 6);
  return record(p);
}

export function declareRecord(queue: string, args: QueueArgs, binding?: string): Buffer {
  return record(Buffer.concat([Buffer.of(DECLARE), Buffer.from(JSON.stringify({ q: queue, a: args, b: binding }))]));
}

function deleteRecord(queue: string): Buffer {
  return record(Buffer.concat([Buffer.of(DELETE), Buffer.from(JSON.stringify({ q: queue }))]));
}

/** Reads a journal, stopping at the first torn or corrupt record. */
export function readJournal(path: string): Recovered & { goodBytes: number } {
  const result: Recovered & { goodBytes: number } = { queues: new Map(), messages: [], maxId: 0, tornBytes: 0, goodBytes: 0 };
  if (!existsSync(path)) return result;
  const data = readFileSync(path);
  const live = new Map<number, JournaledMessage>();
  let pos = 0;
  while (pos + 8 <= data.length) {
    const len = data.readUInt32LE(pos);
    if (pos + 8 + len > data.length) break;
    const payload = data.subarray(pos + 8, pos + 8 + len);
    if (crc32(payload) !== data.readUInt32LE(pos + 4) || len < 1) break;
    try {
      const type = payload[0];
      if (type === ENQUEUE) {
        const id = payload.readUIntLE(1, 6);
        const expiresAt = payload.readDoubleLE(7);
        const metaLen = payload.readUInt32LE(15);
        const meta = JSON.parse(payload.toString("utf8", 19, 19 + metaLen)) as { q: string; d: string; h: Array<[string, string]> };
        const body = Buffer.from(payload.subarray(19 + metaLen));
        live.set(id, { id, queue: meta.q, destination: meta.d, headers: meta.h, body, expiresAt });
        if (id > result.maxId) result.maxId = id;
      } else if (type === REMOVE) {
        live.delete(payload.readUIntLE(1, 6));
      } else if (type === DECLARE) {
        const d = JSON.parse(payload.toString("utf8", 1)) as { q: string; a: QueueArgs; b?: string };
        result.queues.set(d.q, d.b === undefined ? { args: d.a } : { args: d.a, binding: d.b });
      } else if (type === DELETE) {
        const d = JSON.parse(payload.toString("utf8", 1)) as { q: string };
        result.queues.delete(d.q);
        for (const [id, m] of live) if (m.queue === d.q) live.delete(id);
      } else break;
    } catch {
      break;
    }
    pos += 8 + len;
  }
  result.goodBytes = pos;
  result.tornBytes = data.length - pos;
  result.messages = [...live.values()];
  return result;
}

export class Journal {
  private fd: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private waiters: Array<() => void> = [];
  private flushing = false;
  private scheduled = false;
  private unsynced = false;
  private fileBytes: number;
  private liveBytes = 0;
  private readonly liveSize = new Map<number, number>();
  private readonly syncTimer: NodeJS.Timeout;
  private closed = false;
  /** Called after each compaction with the sizes before and after. */
  onCompact: ((before: number, after: number) => void) | undefined;

  /**
   * @param compactSource yields the records that rebuild current state (declares, then live
   *   enqueues); used when the file is mostly dead records.
   */
  constructor(
    readonly dir: string,
    private readonly compactSource: () => Buffer[],
    private readonly onError: (err: Error) => void,
    private readonly compactMinBytes = 16 * 1024 * 1024,
  ) {
    this.fd = -1;
    this.fileBytes = 0;
    this.syncTimer = setInterval(() => {
      if (this.unsynced && !this.flushing) this.barrier(() => {});
    }, 1000);
    this.syncTimer.unref();
  }

  get path(): string {
    return join(this.dir, "journal.log");
  }

  /** Reads the existing journal (truncating a torn tail), then rewrites it compacted. */
  recover(): Recovered {
    const r = readJournal(this.path);
    return r;
  }

  /** Starts a fresh journal file holding exactly `records` (fsynced, atomically renamed). */
  rewrite(records: Buffer[]): void {
    const tmp = this.path + ".tmp";
    const fd = openSync(tmp, "w");
    let bytes = 0;
    try {
      for (const r of records) {
        writeSync(fd, r);
        bytes += r.length;
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dfd = openSync(this.dir, "r");
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = openSync(this.path, "a");
    this.fileBytes = bytes;
    this.unsynced = false;
  }

  enqueue(m: JournaledMessage): void {
    const r = enqueueRecord(m);
    this.liveSize.set(m.id, r.length);
    this.liveBytes += r.length;
    this.append(r);
  }

  remove(id: number): void {
    const size = this.liveSize.get(id);
    if (size === undefined) return;
    this.liveSize.delete(id);
    this.liveBytes -= size;
    this.append(removeRecord(id));
  }

  /** Marks a recovered message live (its record is in the rewritten file). */
  adopt(id: number, recordBytes: number): void {
    this.liveSize.set(id, recordBytes);
    this.liveBytes += recordBytes;
  }

  declare(queue: string, args: QueueArgs, binding?: string): void {
    this.append(declareRecord(queue, args, binding));
  }

  deleteQueue(queue: string): void {
    this.append(deleteRecord(queue));
  }

  /** Calls `cb` once everything appended so far is written and fdatasync'ed. */
  barrier(cb: () => void): void {
    if (this.closed || (!this.flushing && this.pending.length === 0 && !this.unsynced)) {
      cb();
      return;
    }
    this.waiters.push(cb);
    this.schedule();
  }

  /** Clean shutdown: lets an in-flight batch land (keeps record order), then writes, fsyncs and closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => this.barrier(resolve));
    this.closeSync();
  }

  /** Writes and fsyncs everything synchronously. */
  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.syncTimer);
    for (const b of this.pending) writeSync(this.fd, b);
    this.pending = [];
    fsyncSync(this.fd);
    closeSync(this.fd);
    const w = this.waiters;
    this.waiters = [];
    for (const cb of w) cb();
  }

  private append(r: Buffer): void {
    if (this.closed) return;
    this.pending.push(r);
    this.pendingBytes += r.length;
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.flushing || this.closed) return;
    const batch = this.pending;
    const bytes = this.pendingBytes;
    const waiters = this.waiters;
    if (batch.length === 0 && waiters.length === 0) return;
    this.pending = [];
    this.pendingBytes = 0;
    this.waiters = [];
    this.flushing = true;
    const afterSync = (err: Error | null) => {
      this.flushing = false;
      if (err) {
        // Receipts must not claim durability the disk refused: the waiters never run, and the
        // owner is told (the CLI exits; a restart recovers the journal up to its last good record).
        this.closed = true;
        this.onError(err);
        return;
      }
      for (const cb of waiters) cb();
      if (this.closed) return;
      if (this.pending.length > 0 || this.waiters.length > 0) this.schedule();
      else this.maybeCompact();
    };
    const afterWrite = (err: Error | null) => {
      if (err) return afterSync(err);
      this.fileBytes += bytes;
      if (waiters.length === 0) {
        this.unsynced = true;
        return afterSync(null);
      }
      this.unsynced = false;
      fdatasync(this.fd, (e) => afterSync(e));
    };
    if (batch.length === 0) afterWrite(null);
    else writev(this.fd, batch, (err) => afterWrite(err));
  }

  private maybeCompact(): void {
    if (this.fileBytes < this.compactMinBytes || this.liveBytes * 2 > this.fileBytes) return;
    try {
      const before = this.fileBytes;
      const records = this.compactSource();
      this.rewrite(records);
      this.onCompact?.(before, this.fileBytes);
    } catch (err) {
      this.onError(err as Error);
    }
  }
}
