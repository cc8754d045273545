/**
 * Group commit for append-only files: records are written at once (page cache) and made durable
 * by one fdatasync that covers every record appended while the previous one was in flight.
 *
 * A record appended while no sync is in flight starts one at once (no added latency); records
 * appended while one is in flight wait for it and share the next. The syncs run on the thread
 * pool, so the event loop never blocks on the disk; the syncs of many agents' files in one
 * process are in flight together, and the file system's own journal merges them.
 *
 * Records nobody waits for are appended lazily: written at once, made durable by the next sync
 * anyone asks for, or by one within {@link LAZY_SYNC_MS}. Each sync is a disk flush that the
 * next record someone does wait for may queue behind.
 */
import { closeSync, fdatasync, openSync, writeSync } from "node:fs";

/** A lazily appended record is on disk at the latest this long after it was written. */
const LAZY_SYNC_MS = 1_000;

interface Waiter {
  upTo: number;
  resolve: () => void;
  reject: (e: Error) => void;
}


export class GroupCommitFile {
  private readonly fd: number;
  /** Records appended / known durable, counted from 1. */
  private appended = 0;
  private durable = 0;
  private syncing = false;
  private waiters: Waiter[] = [];
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;
  /** Set by close(): called when nothing is left to sync. */
  private onIdle: (() => void) | undefined;
  private lazySync: NodeJS.Timeout | undefined;

  constructor(path: string) {
    this.fd = openSync(path, "a", 0o600);
  }

  /** Writes `text` now; resolves once it is on disk, rejects when the write or the sync failed. */
  append(text: string): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new Error("the journal is closed"));
    try {
      writeSync(this.fd, text);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    const upTo = ++this.appended;
    return new Promise((resolve, reject) => {
      this.waiters.push({ upTo, resolve, reject });
      if (!this.syncing) this.sync();
    });
  }

  /** Writes `text` now; it becomes durable with the next sync (at the latest within a second). Failures are kept for {@link append}. */
  appendLazily(text: string): void {
    if (this.failure || this.closing) return;
    try {
      writeSync(this.fd, text);
    } catch (e) {
      this.failure = e instanceof Error ? e : new Error(String(e));
      return;
    }
    this.appended++;
    if (!this.syncing) this.syncLater();
  }

  private syncLater(): void {
    this.lazySync ??= setTimeout(() => {
      this.lazySync = undefined;
      this.sync();
    }, LAZY_SYNC_MS).unref();
  }

  private sync(): void {
    if (this.syncing || this.durable === this.appended) return;
    this.syncing = true;
    clearTimeout(this.lazySync);
    this.lazySync = undefined;
    const upTo = this.appended;
    fdatasync(this.fd, (e) => {
      this.syncing = false;
      if (e) {
        // The page cache may have dropped what failed to reach the disk: nothing after this is trustworthy.
        this.failure = e;
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w.reject(e);
        this.onIdle?.();
        return;
      }
      this.durable = upTo;
      const still: Waiter[] = [];
      for (const w of this.waiters) {
        if (w.upTo <= upTo) w.resolve();
        else still.push(w);
      }
      this.waiters = still;
      if (this.durable === this.appended) this.onIdle?.();
      else if (this.waiters.length || this.onIdle) this.sync();
      else this.syncLater();
    });
  }

  /** Lets pending records land, then closes the file. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const finish = () => {
        this.onIdle = undefined;
        try {
          closeSync(this.fd);
        } catch {
          // already closed
        }
        resolve();
      };
      if (this.failure || (!this.syncing && this.durable === this.appended)) return finish();
      this.onIdle = finish;
      if (!this.syncing) this.sync();
    });
    return this.closing;
  }
}
