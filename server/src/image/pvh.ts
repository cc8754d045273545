/**
 * A PVH-bootable guest kernel. QEMU starts an uncompressed vmlinux that carries Xen's PVH entry
 * note (XEN_ELFNOTE_PHYS32_ENTRY) directly at that 32-bit entry: no real-mode setup, no
 * decompressor. Under TCG the bzImage's own decompression and relocation took ~0.3-0.4 s of every
 * cold boot (QEMU start to the kernel's first timestamp 660-1320 ms with the bzImage, 270-680 ms
 * with the vmlinux, same-run A/B). The bzImage's payload is decompressed with the host tool of its
 * format; when the tool is missing, or the payload is no ELF with a PVH note, the bzImage is kept.
 */
import { spawn } from "node:child_process";

const FORMATS: { name: string; magic: number[]; cmd: string; args: string[] }[] = [
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], cmd: "lz4", args: ["-dc"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: "zstd", args: ["-dc"] },
  { name: "gzip", magic: [0x1f, 0x8b], cmd: "gzip", args: ["-dc"] },
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: "xz", args: ["-dc"] },
];

const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const PT_NOTE = 4;

export type PvhKernel = { ok: true; vmlinux: Buffer; format: string } | { ok: false; reason: string };

/** The vmlinux inside `bzImage` when it can be booted through PVH, else why not. */
export async function pvhKernel(bzImage: Buffer): Promise<PvhKernel> {
  if (bzImage.length < 0x250 || bzImage.toString("latin1", 0x202, 0x206) !== "HdrS") return { ok: false, reason: "not a bzImage" };
  if (bzImage.readUInt16LE(0x206) < 0x208) return { ok: false, reason: "boot protocol before 2.08 (no payload fields)" };
  const setupSectors = bzImage[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + bzImage.readUInt32LE(0x248);
  const payload = bzImage.subarray(start, start + bzImage.readUInt32LE(0x24c));
  const format = FORMATS.find((f) => f.magic.every((b, i) => payload[i] === b));
  if (!format) return { ok: false, reason: `payload compression not recognised (${payload.subarray(0, 4).toString("hex")})` };
  let vmlinux: Buffer;
  try {
    vmlinux = await decompress(format.cmd, format.args, payload);
  } catch (e) {
    return { ok: false, reason: `${format.cmd}: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!hasPvhNote(vmlinux)) return { ok: false, reason: "the kernel has no PVH entry note" };
  return { ok: true, vmlinux, format: format.name };
}

/**
 * The tool's whole output. Its exit status is not the verdict: the kernel appends the uncompressed
 * size after the compressed stream, which lz4, zstd and gzip report as trailing garbage (the ELF
 * check that follows is).
 */
function decompress(cmd: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "ignore"] });
    const out: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.on("error", reject);
    child.on("close", () => resolve(Buffer.concat(out)));
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);
  });
}

/** True for a 64-bit little-endian ELF with a Xen note of type PHYS32_ENTRY in a PT_NOTE segment. */
export function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 0x28 > elf.length || elf.readUInt32LE(ph) !== PT_NOTE) continue;
    const offset = Number(elf.readBigUInt64LE(ph + 0x08));
    const end = Math.min(elf.length, offset + Number(elf.readBigUInt64LE(ph + 0x20)));
    for (let n = offset; n + 12 <= end; ) {
      const nameSize = elf.readUInt32LE(n);
      const descSize = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      const name = elf.toString("latin1", n + 12, n + 12 + Math.max(0, nameSize - 1));
      if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      n += 12 + align4(nameSize) + align4(descSize);
    }
  }
  return false;
}

const align4 = (n: number) => (n + 3) & ~3;
