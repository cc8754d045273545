/**
 * Control-monitor connections kept open between driver calls, one per monitor socket path and
 * shared by every driver instance of the process. A QMP connection costs a greeting
 * and a capabilities round trip, several times a pause or resume itself; so a connection is
 * reused while calls come close together. QEMU serves one client per monitor socket, so a cached
 * connection is closed when idle for `idleMs` and never kept past `maxAgeMs`: another process
 * (a second controller, `vmc vm ...`) waits at most that long for the monitor.
 */
import { QmpClient } from "./qmp";

interface Entry {
  path: string;
  client: Promise<QmpClient>;
  openedAt: number;
  users: number;
  idle?: NodeJS.Timeout;
}

export class ControlMonitors {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly idleMs = 500,
    private readonly maxAgeMs = 2000,
  ) {}

  /** Runs `fn` with the monitor's connection (opened, or reused while still fresh and open). */
  async use<T>(path: string, fn: (qmp: QmpClient) => Promise<T>, timeoutMs?: number): Promise<T> {
    const name = path;
    const entry = await this.acquire(name, path, timeoutMs);
    const qmp = await entry.client;
    qmp.ref();
    try {
      return await fn(qmp);
    } finally {
      this.release(name, entry);
    }
  }

  /** Closes the cached connection to `path` (before QEMU is told to quit, or when it went away). */
  drop(name: string): void {
    const entry = this.entries.get(name);
    if (!entry) return;
    this.entries.delete(name);
    if (entry.idle) clearTimeout(entry.idle);
    void entry.client.then((q) => q.close(), () => undefined);
  }

  private async acquire(name: string, path: string, timeoutMs?: number): Promise<Entry> {
    const cached = this.entries.get(name);
    if (cached && cached.path === path) {
      const client = await cached.client.catch(() => undefined);
      if (client && !client.isClosed && this.entries.get(name) === cached) {
        if (cached.idle) clearTimeout(cached.idle);
        cached.idle = undefined;
        cached.users++;
        return cached;
      }
    }
    this.drop(name);
    const entry: Entry = { path, client: QmpClient.connect(path, timeoutMs), openedAt: Date.now(), users: 1 };
    this.entries.set(name, entry);
    try {
      const client = await entry.client;
      client.once("close", () => {
        if (this.entries.get(name) === entry) this.drop(name);
      });
    } catch (err) {
      if (this.entries.get(name) === entry) this.entries.delete(name);
      throw err;
    }
    return entry;
  }

  private release(name: string, entry: Entry): void {
    entry.users--;
    if (this.entries.get(name) !== entry || entry.users > 0) return;
    if (Date.now() - entry.openedAt >= this.maxAgeMs) {
      this.drop(name);
      return;
    }
    void entry.client.then((q) => q.unref(), () => undefined);
    entry.idle = setTimeout(() => {
      if (this.entries.get(name) === entry && entry.users === 0) this.drop(name);
    }, this.idleMs);
    entry.idle.unref();
  }
}

/** The process's control connections (every QemuDriver shares them). */
export const controlMonitors = new ControlMonitors();
