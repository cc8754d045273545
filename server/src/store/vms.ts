/**
 * The VM registry: one directory per VM under `$VMC_HOME/vms/<name>/`, shared by every controller
 * process on the machine.
 *
 * - `vm.json`: the {@link VmRecord}, replaced atomically (write a temporary file, rename);
 * - `disk.qcow2`, `console.log`, `qemu.pid`, sockets: the driver's files;
 * - `lock`: held (O_EXCL file with the holder's pid) while an operation changes the VM; a lock
 *   whose holder died is taken over, so a controller killed with -9 never wedges a VM.
 *
 * A VM appears only complete: it is built in a hidden `.new-*` directory and renamed into place,
 * so a failed or interrupted create leaves no half-made VM (leftovers are swept on the next create).
 * @packageDocumentation
 */
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { DriverName, VmName } from "@vmc/protocol";
import { alreadyExists, unknownVm } from "../hypervisors/errors";
import { pidAlive } from "../pid";

export const VmRecord = z.object({
  name: VmName,
  driver: DriverName,
  agentId: z.string(),
  memoryMiB: z.number().int().positive(),
  cpus: z.number().int().positive(),
  createdAt: z.number(),
  broker: z.object({ host: z.string(), port: z.number().int() }),
  controllerPublicKey: z.string(),
  image: z
    .object({ id: z.string(), kernel: z.string(), initrd: z.string(), rootfs: z.string(), baseDisk: z.string(), cmdline: z.string() })
    .optional(),
  /** Guest port → host loopback port forwards (the agent's data channel). */
  forwards: z.array(z.object({ guestPort: z.number().int(), hostPort: z.number().int() })).default([]),
  /** Template directory this VM was cloned from: its first start restores the template's state. */
  template: z.string().optional(),
  /** Set once the VM has started at least once. */
  started: z.boolean().default(false),
  /** Driver-specific settings (for example the accelerator chosen at start). */
  driverData: z.record(z.string(), z.unknown()).default({}),
});
export type VmRecord = z.infer<typeof VmRecord>;

const RECORD = "vm.json";
const LOCK = "lock";
/** Unix socket paths are limited to 108 bytes; longer ones move to a short per-VM runtime dir. */
const MAX_SOCKET_PATH = 100;

export class VmStore {
  readonly root: string;

  constructor(readonly home: string) {
    this.root = join(home, "vms");
  }

  dir(name: string): string {
    return join(this.root, VmName.parse(name));
  }

  /** Path of a socket of the VM, short enough for bind(2). */
  socketPath(name: string, socket: string): string {
    const path = join(this.dir(name), socket);
    if (Buffer.byteLength(path) <= MAX_SOCKET_PATH) return path;
    const hash = createHash("sha256").update(this.dir(name)).digest("hex").slice(0, 16);
    const runtime = join(tmpdir(), `vmc-${process.getuid?.() ?? 0}`, hash);
    mkdirSync(runtime, { recursive: true, mode: 0o700 });
    return join(runtime, socket);
  }

  exists(name: string): boolean {
    return existsSync(join(this.dir(name), RECORD));
  }

  /** The record, or UnknownVm. */
  read(name: string): VmRecord {
    const parsed = VmName.safeParse(name);
    if (!parsed.success) throw unknownVm(name);
    let text: string;
    try {
      text = readFileSync(join(this.dir(name), RECORD), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw unknownVm(name);
      throw err;
    }
    return VmRecord.parse(JSON.parse(text));
  }

  list(): VmRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.root);
    } catch {
      return [];
    }
    const records: VmRecord[] = [];
    for (const name of names.sort()) {
      if (name.startsWith(".")) continue;
      try {
        records.push(this.read(name));
      } catch {
        // a directory being deleted, or not a VM
      }
    }
    return records;
  }

  /** Replaces vm.json atomically. */
  write(record: VmRecord): void {
    writeAtomic(join(this.dir(record.name), RECORD), `${JSON.stringify(VmRecord.parse(record), null, 2)}\n`);
  }

  update(name: string, change: (record: VmRecord) => void): VmRecord {
    const record = this.read(name);
    change(record);
    this.write(record);
    return record;
  }

  /**
   * Creates a VM all or nothing: `build` fills a fresh hidden directory and returns the record;
   * the directory is then renamed to `vms/<name>`. AlreadyExists when the name is taken (also when
   * another process wins the race); on any failure the hidden directory is removed.
   */
  async create(name: string, build: (dir: string) => Promise<VmRecord>): Promise<VmRecord> {
    VmName.parse(name);
    mkdirSync(this.root, { recursive: true });
    this.sweep();
    if (existsSync(this.dir(name))) throw alreadyExists(name);
    const staging = join(this.root, `.new-${process.pid}-${randomBytes(4).toString("hex")}-${name}`);
    mkdirSync(staging);
    try {
      const record = await build(staging);
      writeAtomic(join(staging, RECORD), `${JSON.stringify(VmRecord.parse(record), null, 2)}\n`);
      try {
        renameSync(staging, this.dir(name));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST" || code === "ENOTEMPTY") throw alreadyExists(name);
        throw err;
      }
      return record;
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  }

  /** Removes the VM's directory (the caller has made sure nothing runs). */
  remove(name: string): void {
    const dir = this.dir(name);
    if (!existsSync(dir)) throw unknownVm(name);
    const doomed = join(this.root, `.del-${process.pid}-${randomBytes(4).toString("hex")}-${name}`);
    renameSync(dir, doomed);
    rmSync(doomed, { recursive: true, force: true });
  }

  /** Removes staging directories left by processes that died mid-create. */
  private sweep(): void {
    for (const entry of readdirSync(this.root)) {
      const m = /^\.(?:new|del)-(\d+)-/.exec(entry);
      if (!m || pidAlive(Number(m[1]))) continue;
      rmSync(join(this.root, entry), { recursive: true, force: true });
    }
  }

  /**
   * Runs `fn` holding the VM's lock. Waits (bounded by `timeoutMs`) while another live process
   * holds it; takes over a lock whose holder has died.
   */
  async withLock<T>(name: string, fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
    const path = join(this.dir(name), LOCK);
    const deadline = Date.now() + timeoutMs;
    let delay = 2;
    for (;;) {
      if (!existsSync(this.dir(name))) throw unknownVm(name);
      try {
        const fd = openSync(path, "wx");
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") throw unknownVm(name);
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const holder = Number.parseInt(safeRead(path), 10);
      if (Number.isFinite(holder) && !pidAlive(holder) && removeDeadLock(path, holder)) continue;
      if (Date.now() > deadline) throw new Error(`VM '${name}' is locked by process ${holder} (waited ${timeoutMs} ms)`);
      await sleep(delay);
      delay = Math.min(delay * 2, 50);
    }
    try {
      return await fn();
    } finally {
      rmSync(path, { force: true });
    }
  }
}

/**
 * Removes the lock of `dead`, a holder that has died, unless another process is doing so right now
 * (returns false then). Several processes may find the same dead lock at once; moving it aside
 * blindly could move a live lock taken meanwhile by one of them. So a taker first creates the dead
 * holder's takeover marker (O_EXCL: one taker at a time), then removes the lock only if it still
 * names `dead`. Once removed, the lock never names `dead` again, so a later taker of the same
 * marker finds another pid (or nothing) and removes nothing. The whole takeover is synchronous; a
 * marker older than a few seconds was left by a taker that died inside it and is cleared.
 */
function removeDeadLock(path: string, dead: number): boolean {
  const marker = `${path}.takeover-${dead}`;
  try {
    closeSync(openSync(marker, "wx"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    try {
      if (Date.now() - statSync(marker).mtimeMs > 5000) rmSync(marker, { force: true });
    } catch {
      // gone meanwhile
    }
    return false;
  }
  try {
    if (Number.parseInt(safeRead(path), 10) === dead) rmSync(path, { force: true });
  } finally {
    rmSync(marker, { force: true });
  }
  return true;
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** Writes a file so that readers see the old or the new content, never a mix. */
export function writeAtomic(path: string, content: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}
