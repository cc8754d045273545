/**
 * The PVH kernel step of the image build (server/src/image/pvh.ts) on synthetic inputs: the note
 * parser finds Xen's PHYS32_ENTRY note and nothing else, and a bzImage whose payload is a
 * compressed ELF without that note is kept (the build falls back to the bzImage).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { hasPvhNote, pvhKernel } from "@vmc/server/image/pvh";

/** A minimal ELF64 LE with one PT_NOTE segment holding a note named `name` of `type`. */
function elfWithNote(name: string, type: number): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, "latin1");
  const pad = (n: number) => (n + 3) & ~3;
  const note = Buffer.alloc(12 + pad(nameBytes.length) + 8);
  note.writeUInt32LE(nameBytes.length, 0);
  note.writeUInt32LE(8, 4);
  note.writeUInt32LE(type, 8);
  nameBytes.copy(note, 12);
  const elf = Buffer.alloc(64 + 56 + note.length);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // 64-bit
  elf[5] = 1; // little-endian
  elf.writeBigUInt64LE(64n, 0x20); // e_phoff
  elf.writeUInt16LE(56, 0x36); // e_phentsize
  elf.writeUInt16LE(1, 0x38); // e_phnum
  elf.writeUInt32LE(4, 64); // PT_NOTE
  elf.writeBigUInt64LE(BigInt(64 + 56), 64 + 0x08); // p_offset
  elf.writeBigUInt64LE(BigInt(note.length), 64 + 0x20); // p_filesz
  note.copy(elf, 64 + 56);
  return elf;
}

/** A bzImage-shaped buffer (boot protocol 2.15, one setup sector) around `payload`. */
function bzImageAround(payload: Buffer): Buffer {
  const setup = Buffer.alloc(1024);
  setup[0x1f1] = 1;
  setup.write("HdrS", 0x202, "latin1");
  setup.writeUInt16LE(0x20f, 0x206);
  setup.writeUInt32LE(0, 0x248);
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([setup, payload]);
}

test("hasPvhNote: Xen PHYS32_ENTRY only", () => {
  assert.equal(hasPvhNote(elfWithNote("Xen", 18)), true);
  assert.equal(hasPvhNote(elfWithNote("Xen", 6)), false);
  assert.equal(hasPvhNote(elfWithNote("GNU", 18)), false);
  assert.equal(hasPvhNote(Buffer.from("not an elf at all, not an elf at all, not an elf at all, padding")), false);
});

test("pvhKernel: not a bzImage, unknown payload, a payload without the note", async () => {
  assert.deepEqual(await pvhKernel(Buffer.alloc(4096)), { ok: false, reason: "not a bzImage" });
  const unknown = await pvhKernel(bzImageAround(Buffer.from("plain bytes")));
  assert.equal(unknown.ok, false);
  if (spawnSync("gzip", ["--version"]).status !== 0) return;
  const noNote = await pvhKernel(bzImageAround(gzipSync(elfWithNote("Xen", 6))));
  assert.deepEqual(noNote, { ok: false, reason: "the kernel has no PVH entry note" });
  const withNote = await pvhKernel(bzImageAround(gzipSync(elfWithNote("Xen", 18))));
  assert.equal(withNote.ok, true);
  if (withNote.ok) assert.equal(withNote.format, "gzip");
});
