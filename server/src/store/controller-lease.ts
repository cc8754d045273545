/**
 * Controller identity leases: `$VMC_HOME/controllers/slot-<n>/`.
 *
 * A controller's replies come to `/topic/vmc.controller.<instanceId>` through a durable
 * subscription that outlives the process for a while. A controller that dies (kill -9) leaves
 * results for its commands queued there; the next controller that takes the same slot gets the
 * same instanceId, so it reads them and finishes those commands' records.
 *
 * - `id`: the slot's instanceId, random, written once;
 * - `lock`: created whole by the holder (a hard link of a complete file, which fails when the lock
 *   exists), holding `<pid> <process start time>`; a lock whose holder is gone (or whose pid was
 *   reused by another process) is taken over, one taker at a time (see {@link removeStaleLock}).
 * @packageDocumentation
 */
import { randomBytes } from "node:crypto";
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ControllerLease {
  /** Pass it to the Fleet (`instanceId`): the slot's stable reply destination. */
  readonly instanceId: string;
  readonly slot: number;
  /** Releases the slot (idempotent). The reply subscription stays until it expires. */
  release(): void;
}

export interface LeaseOptions {
  /** Slots tried before giving up (default 64). */
  maxSlots?: number;
  /** Slots to try first (those with unfinished commands), lowest first otherwise. */
  prefer?: (instanceIdOfSlot: (slot: number) => string | undefined) => number[];
}

/** Reply subscriptions of leased controllers outlive them this long (the window for a restart). */
export const LEASED_REPLY_EXPIRES_MS = 3_600_000;

export function leaseDir(home: string): string {
  return join(home, "controllers");
}

/** Takes the first free slot (preferred ones first). Throws when all `maxSlots` are held. */
export function acquireControllerLease(home: string, options: LeaseOptions = {}): ControllerLease {
  const root = leaseDir(home);
  mkdirSync(root, { recursive: true });
  const maxSlots = options.maxSlots ?? 64;
  const preferred = options.prefer?.((slot) => readSlotId(root, slot)) ?? [];
  const order = [...new Set([...preferred.filter((s) => s >= 0 && s < maxSlots), ...Array.from({ length: maxSlots }, (_, i) => i)])];
  for (const slot of order) {
    const dir = join(root, `slot-${slot}`);
    mkdirSync(dir, { recursive: true });
    if (!tryLock(join(dir, "lock"))) continue;
    const instanceId = readSlotId(root, slot) ?? createSlotId(dir);
    let released = false;
    return {
      instanceId,
      slot,
      release() {
        if (released) return;
        released = true;
        const mine = readLock(join(dir, "lock"));
        if (mine && mine.pid === process.pid) rmSync(join(dir, "lock"), { force: true });
      },
    };
  }
  throw new Error(`all ${maxSlots} controller slots in ${root} are held by live processes`);
}

/** Instance ids of every slot, with whether a live process holds it. */
export function listSlots(home: string): Array<{ slot: number; instanceId: string; held: boolean }> {
  const root = leaseDir(home);
  const out: Array<{ slot: number; instanceId: string; held: boolean }> = [];
  for (let slot = 0; slot < 1024; slot++) {
    const id = readSlotId(root, slot);
    if (!id) {
      if (slot > 64) break;
      continue;
    }
    const lock = readLock(join(root, `slot-${slot}`, "lock"));
    out.push({ slot, instanceId: id, held: lock !== undefined && holderAlive(lock) });
  }
  return out;
}

function readSlotId(root: string, slot: number): string | undefined {
  try {
    const id = readFileSync(join(root, `slot-${slot}`, "id"), "utf8").trim();
    return /^[A-Za-z0-9]{8,64}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

function createSlotId(dir: string): string {
  const id = `k${randomBytes(12).toString("base64url").replace(/[-_]/g, "x")}`;
  const tmp = join(dir, `id.${process.pid}.tmp`);
  writeFileSync(tmp, `${id}\n`);
  renameSync(tmp, join(dir, "id"));
  return id;
}

interface LockHolder {
  pid: number;
  start: string;
}

function readLock(path: string): LockHolder | undefined {
  try {
    const [pid, start] = readFileSync(path, "utf8").trim().split(" ");
    const n = Number(pid);
    return Number.isInteger(n) && n > 0 ? { pid: n, start: start ?? "" } : { pid: 0, start: "" };
  } catch {
    return undefined;
  }
}

function holderAlive(holder: LockHolder): boolean {
  if (holder.pid <= 0) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const start = processStartTime(holder.pid);
  return start === undefined || holder.start === "" || start === holder.start;
}

function tryLock(path: string): boolean {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (createLock(path)) return true;
    const holder = readLock(path);
    if (holder === undefined) continue; // released meanwhile
    if (holderAlive(holder) || !removeStaleLock(path, holder)) return false;
  }
  return false;
}

/**
 * Creates the lock with its content in one step (a hard link of a complete temporary file fails
 * when the lock exists), so no reader ever sees an empty lock and takes it for a dead one.
 */
function createLock(path: string): boolean {
  const tmp = `${path}.new.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(tmp, `${process.pid} ${processStartTime(process.pid) ?? ""}\n`);
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    return false;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Removes the lock of `stale`, a holder that is gone, unless another process is doing so right now
 * (false then). Of several processes that found the same stale lock, one at a time creates its
 * takeover marker (O_EXCL) and removes the lock only if it still names that holder: a lock taken
 * meanwhile by a live process is never removed. (Moving the lock aside and giving it back when it
 * turned out to be live could overwrite a third process's new lock.) The takeover is synchronous;
 * a marker older than a few seconds was left by a taker that died inside it and is cleared.
 */
function removeStaleLock(path: string, stale: LockHolder): boolean {
  const marker = `${path}.takeover.${stale.pid}.${stale.start}`;
  try {
    closeSync(openSync(marker, "wx"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    try {
      if (Date.now() - statSync(marker).mtimeMs > 5000) rmSync(marker, { force: true });
    } catch {
      // gone meanwhile
    }
    return false;
  }
  try {
    const now = readLock(path);
    if (now && now.pid === stale.pid && now.start === stale.start) rmSync(path, { force: true });
  } finally {
    rmSync(marker, { force: true });
  }
  return true;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), so a reused pid is not mistaken for the holder. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}
