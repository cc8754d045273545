/**
 * Linked clones in a few milliseconds. A qcow2 overlay of a given base file is the same bytes
 * for every VM (header, empty tables, the base's absolute path), so `qemu-img create` runs once
 * per base and each VM gets a copy of that prototype (reflinked where the file system can).
 * Prototypes live in `$VMC_HOME/overlays/`, keyed by the base's path, inode, size and mtime and
 * by the overlay's layout.
 */
import { constants, copyFileSync, mkdirSync, openSync, readSync, closeSync, renameSync, rmSync, existsSync, statSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { imageMissing } from "../errors";
import { OVERLAY_OPTIONS, overlayArgs } from "./command";
import { qemuImg } from "./exec";

const QCOW2_MAGIC = 0x514649fb;

/** Throws ImageMissing unless `base` starts with a qcow2 header. */
export function checkQcow2(base: string): void {
  let fd: number;
  try {
    fd = openSync(base, "r");
  } catch (err) {
    throw imageMissing(base, (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message);
  }
  try {
    const header = Buffer.alloc(32);
    const n = readSync(fd, header, 0, 32, 0);
    if (n < 32 || header.readUInt32BE(0) !== QCOW2_MAGIC) throw imageMissing(base, "not a qcow2 image (bad header)");
    const version = header.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw imageMissing(base, `unsupported qcow2 version ${version}`);
    if (header.readBigUInt64BE(24) === 0n) throw imageMissing(base, "qcow2 image of size 0");
  } finally {
    closeSync(fd);
  }
}

export async function createOverlay(home: string, base: string, overlay: string): Promise<void> {
  copyFileSync(await overlayPrototype(home, base), overlay, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
}

/**
 * The prototype overlay of `base`, made (after a `qemu-img check` of the base) when there is
 * none yet. A template build calls it so its first clone does not pay the two `qemu-img` runs.
 */
export async function overlayPrototype(home: string, base: string): Promise<string> {
  checkQcow2(base);
  const st = statSync(base);
  const key = createHash("sha256").update(`${base}\0${st.ino}\0${st.size}\0${st.mtimeMs}\0${OVERLAY_OPTIONS}`).digest("hex").slice(0, 24);
  const dir = join(home, "overlays");
  const prototype = join(dir, `${key}.qcow2`);
  if (!existsSync(prototype)) {
    mkdirSync(dir, { recursive: true });
    const tmp = join(dir, `.${key}-${process.pid}-${randomBytes(4).toString("hex")}.qcow2`);
    try {
      // Once per base: a corrupt one fails here, clearly, instead of as I/O errors in the guest.
      await qemuImg(["check", "-q", "-f", "qcow2", base], "check the base disk").catch((err: Error) => {
        throw imageMissing(base, `qemu-img check: ${err.message.replace(/^qemu: check the base disk failed: /, "")}`);
      });
      await qemuImg(overlayArgs(base, tmp), "create the disk overlay");
      renameSync(tmp, prototype);
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  return prototype;
}
