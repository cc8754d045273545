/**
 * The image cache: the same inputs reuse the entry without rebuilding, a changed input (the agent
 * bundle) builds a new image next to the old one, and a corrupt or incomplete entry is detected by
 * its manifest checksums and rebuilt.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFileSync, closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { verifyEntry, type Manifest } from "@vmc/server/image/build";
import { sha256File } from "@vmc/server/image/apt";
import { requireComponent } from "../harness/components";
import { imageToolsPresent, qemuPresent, testImage } from "./fixture";

const scratch = mkdtempSync(join(tmpdir(), "vmc-image-cache-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
const agentBundle = fileURLToPath(new URL("../../dist/agent.mjs", import.meta.url));

const present = (t: import("node:test").TestContext) =>
  requireComponent(t, "qemu-utils", qemuPresent()) && requireComponent(t, "apt-get, e2fsprogs and zstd", imageToolsPresent());

test("unchanged inputs reuse the cached image without rebuilding", async (t) => {
  if (!present(t)) return;
  const first = await testImage();
  const manifestMtime = statSync(join(first.dir, "manifest.json")).mtimeMs;
  const log: string[] = [];
  const again = await testImage({ onProgress: (m) => log.push(m) });
  assert.deepEqual(again, first);
  assert.equal(statSync(join(first.dir, "manifest.json")).mtimeMs, manifestMtime, "manifest rewritten: the image was rebuilt");
  assert.ok(log.some((m) => m.includes("up to date")), log.join("\n"));
  assert.ok(!log.some((m) => m.startsWith("built ")), log.join("\n"));
});

test("a changed agent bundle builds a new image and keeps the old one", async (t) => {
  if (!present(t)) return;
  const base = await testImage();
  const changed = join(scratch, "agent.mjs");
  copyFileSync(agentBundle, changed);
  appendFileSync(changed, `\n// ${randomBytes(8).toString("hex")}\n`);
  const log: string[] = [];
  const next = await testImage({ agentBundle: changed, onProgress: (m) => log.push(m) });
  assert.notEqual(next.id, base.id);
  assert.ok(log.some((m) => m.startsWith("built ")), log.join("\n"));
  assert.ok(log.some((m) => /^kernel \S+ from the cache/.test(m)), `the guest kernel must come from its cache, not be compiled again:\n${log.join("\n")}`);
  const manifest = JSON.parse(readFileSync(join(next.dir, "manifest.json"), "utf8")) as Manifest;
  assert.equal((manifest.inputs as { agentSha256: string }).agentSha256, await sha256File(changed));
  assert.ok((await verifyEntry(base.dir)).ok, "the previous image must stay usable (VM overlays point at its base disk)");
  rmSync(next.dir, { recursive: true, force: true });
});

test("a corrupt cache entry is detected and rebuilt", async (t) => {
  if (!present(t)) return;
  const image = await testImage();
  const good = await sha256File(image.initrd);
  const size = statSync(image.initrd).size;
  const fd = openSync(image.initrd, "r+");
  writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, Math.floor(size / 2));
  closeSync(fd);
  const verdict = await verifyEntry(image.dir);
  assert.equal(verdict.ok, false);
  assert.match((verdict as { reason: string }).reason, /initrd checksum mismatch/);

  const log: string[] = [];
  const rebuilt = await testImage({ onProgress: (m) => log.push(m) });
  assert.ok(log.some((m) => m.includes("checksum mismatch")), log.join("\n"));
  assert.ok(log.some((m) => m.startsWith("built ")), log.join("\n"));
  assert.equal(rebuilt.id, image.id);
  assert.equal(await sha256File(rebuilt.initrd), good, "a rebuild of the same inputs makes the same initramfs");
  assert.ok((await verifyEntry(rebuilt.dir)).ok);
});

test("an incomplete cache entry (missing or truncated file, no manifest) is not accepted", async (t) => {
  if (!present(t)) return;
  const image = await testImage();
  const copy = join(scratch, "entry");
  mkdirSync(copy);
  for (const f of ["kernel", "initrd", "base.qcow2", "manifest.json"]) copyFileSync(join(image.dir, f), join(copy, f));
  const reason = async () => {
    const v = await verifyEntry(copy);
    return v.ok ? "ok" : v.reason;
  };
  assert.match(await reason(), /rootfs.img missing/);
  copyFileSync(image.rootfs, join(copy, "rootfs.img"));
  assert.equal(await reason(), "ok");
  truncateSync(join(copy, "kernel"), 4096);
  assert.match(await reason(), /kernel has 4096 bytes/);
  unlinkSync(join(copy, "manifest.json"));
  assert.match(await reason(), /manifest unreadable/);
});
