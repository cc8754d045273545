/**
 * Bad input and faults, on real QEMU: each is a clear typed error and nothing is left half-made.
 * Also: a controller killed with -9 (holding the lock, holding the event monitor) and a new one
 * re-adopts the running VM.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, unwatchFile, watchFile, writeSync, closeSync, rmSync } from "node:fs";
import { join } from "node:path";
import { once } from "node:events";
import { VmcErrorCodes, type VmState } from "@vmc/protocol";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import type { BootImage, VmStateEvent } from "@vmc/server/hypervisors/driver";
import { requireComponent, inCi } from "../harness/components";
import { qemuInstalled, removeHome, tempHome, testImage } from "./harness";

const KEY = "A".repeat(43) + "=";
const code = (c: number) => (e: { code?: number }) => e.code === c;
const stateIs = (s: VmState) => (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === s;
const isRoot = process.getuid?.() === 0;

/** Resolves when the VM's console log shows `pattern`; fails after `timeoutMs`. */
async function waitForConsole(path: string, pattern: RegExp, timeoutMs: number): Promise<void> {
  const seen = () => existsSync(path) && pattern.test(readFileSync(path, "utf8"));
  if (seen()) return;
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (!seen()) return;
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${pattern} did not appear in ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      unwatchFile(path, check);
    };
    watchFile(path, { interval: 100 }, check);
    check();
  });
}

describe("qemu faults", { timeout: 240_000 }, () => {
  let home: string;
  let image: BootImage;
  let driver: QemuDriver;
  const spec = (name: string, img: BootImage = image) => ({ name, image: img, broker: { host: "127.0.0.1", port: 9 }, controllerPublicKey: KEY, fromTemplate: false });

  before(async () => {
    if (!qemuInstalled) return;
    home = tempHome();
    image = await testImage();
    driver = new QemuDriver(home);
  });
  after(() => {
    if (home) removeHome(home);
  });

  it("unknown VM and bad names are UnknownVm", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    for (const op of [() => driver.status("nosuch"), () => driver.start("nosuch"), () => driver.pause("nosuch"), () => driver.delete("nosuch"), () => driver.listSnapshots("nosuch"), () => driver.status("../etc")]) {
      await assert.rejects(op(), code(VmcErrorCodes.UnknownVm));
    }
  });

  it("wrong state is InvalidState naming the current state", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    await driver.create(spec("idle"));
    await assert.rejects(driver.create(spec("idle")), code(VmcErrorCodes.AlreadyExists));
    await assert.rejects(driver.pause("idle"), stateIs("stopped"));
    await assert.rejects(driver.resume("idle"), stateIs("stopped"));
    await assert.rejects(driver.restoreSnapshot("idle", "nope"), code(VmcErrorCodes.UnknownSnapshot));
    await driver.delete("idle");
  });

  it("a corrupt base image fails create cleanly", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const bad = join(home, "bad");
    mkdirSync(bad);
    const headerless = { ...image, id: "bad1", baseDisk: join(bad, "zeroed.qcow2") };
    copyFileSync(image.baseDisk, headerless.baseDisk);
    const fd = openSync(headerless.baseDisk, "r+");
    writeSync(fd, Buffer.alloc(512), 0, 512, 0);
    closeSync(fd);
    await assert.rejects(driver.create(spec("c1", headerless)), (e: { code?: number; message?: string }) => e.code === VmcErrorCodes.ImageMissing && /qcow2/.test(e.message ?? ""));
    // A valid header over missing tables: the first create from a base checks it (qemu-img check).
    const truncated = { ...image, id: "bad2", baseDisk: join(bad, "truncated.qcow2") };
    copyFileSync(image.baseDisk, truncated.baseDisk);
    spawnSync("truncate", ["-s", "600", truncated.baseDisk]);
    await assert.rejects(driver.create(spec("c2", truncated)), (e: { code?: number; message?: string }) => e.code === VmcErrorCodes.ImageMissing && /check|qcow2|read|image|L1|EOF|corrupt/i.test(e.message ?? ""));
    const missing = { ...image, kernel: join(bad, "no-kernel") };
    await assert.rejects(driver.create(spec("c3", missing)), code(VmcErrorCodes.ImageMissing));
    assert.deepEqual(readdirSync(driver.store.root).filter((n) => n.startsWith("c") || n.startsWith(".")), [], "nothing half-created");
  });

  it("QEMU killed from outside: an exit event, then stopped with a reason, and it starts again", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    await driver.create(spec("victim"));
    const { pid } = await driver.start("victim");
    assert.ok(pid);
    const events: VmStateEvent[] = [];
    const exited = new Promise<void>((resolve) => {
      void driver.watch("victim", (e) => {
        events.push(e);
        if (e.state === "stopped") resolve();
      });
    });
    // Make sure the watcher is attached before the kill.
    await driver.pause("victim");
    await driver.resume("victim");
    process.kill(pid!, "SIGKILL");
    await exited;
    assert.equal(events.at(-1)?.cause, "exit");
    const s = await driver.status("victim");
    assert.equal(s.state, "stopped");
    assert.match(s.reason ?? "", /without a stop request/);
    await assert.rejects(driver.pause("victim"), stateIs("stopped"));
    const again = await driver.start("victim");
    assert.equal(again.state, "running");
    assert.notEqual(again.pid, pid);
    await driver.delete("victim", { force: true });
  });

  it("a controller killed with -9 (holding the lock and the event monitor) does not wedge the VM", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    await driver.create(spec("adopt"));
    const { pid } = await driver.start("adopt");
    // Another controller process: takes the VM's lock and its event monitor, then is killed -9.
    const holder = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures", "hold-lock.ts"), home, "adopt"], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"], detached: true });
    t.after(() => {
      try {
        process.kill(-holder.pid!, "SIGKILL");
      } catch {
        // gone
      }
    });
    let out = "";
    holder.stdout!.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (d: string) => {
        out += d;
        if (out.includes("holding")) resolve();
      });
      holder.once("exit", () => reject(new Error("holder exited early")));
    });
    process.kill(-holder.pid!, "SIGKILL");
    await once(holder, "exit");
    // A fresh controller (this process, new driver instance) adopts the VM.
    const fresh = new QemuDriver(home);
    const s = await fresh.status("adopt");
    assert.equal(s.state, "running");
    assert.equal(s.pid, pid, "the same QEMU process, adopted");
    const events: VmStateEvent[] = [];
    let resumed!: () => void;
    const sawResume = new Promise<void>((resolve) => (resumed = resolve));
    const w = await fresh.watch("adopt", (e) => {
      events.push(e);
      if (e.cause === "RESUME") resumed();
    });
    assert.equal((await fresh.pause("adopt")).state, "paused");
    assert.equal((await fresh.resume("adopt")).state, "running");
    await Promise.race([sawResume, new Promise((_, reject) => setTimeout(() => reject(new Error("no RESUME event within 10 s")), 10_000).unref())]);
    w.dispose();
    assert.deepEqual(events.map((e) => e.cause).slice(0, 2), ["STOP", "RESUME"], "events reach the new controller");
    await fresh.delete("adopt", { force: true });
  });

  it("disk full while snapshotting: a typed error, no snapshot, the VM keeps running", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    if (!isRoot) {
      if (inCi) throw new Error("CI runs as root: this test mounts a tmpfs");
      t.skip("needs root to mount a small tmpfs");
      return;
    }
    const small = join(home, "small");
    mkdirSync(small);
    const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=32m", "tmpfs", small], { encoding: "utf8" });
    assert.equal(mount.status, 0, mount.stderr);
    const smallHome = join(small, "home");
    const d = new QemuDriver(smallHome);
    t.after(() => {
      const pidFile = join(smallHome, "vms", "full", "qemu.pid");
      if (existsSync(pidFile)) spawnSync("sh", ["-c", `kill -9 $(cat ${pidFile})`]);
      spawnSync("umount", ["-l", small]);
      rmSync(small, { recursive: true, force: true });
    });
    await d.create(spec("full"));
    await d.start("full");
    // A guest that has barely started has almost no machine state (zero pages): wait until it has
    // booted into its agent, so its state is far bigger than the space left below.
    await waitForConsole(d.files("full").console, /vmc-init: agent start/, 180_000);
    // Fill the file system, leaving less than any machine state needs.
    const filler = join(small, "filler");
    const fd = openSync(filler, "w");
    const block = Buffer.alloc(1 << 20, 1);
    try {
      for (;;) writeSync(fd, block);
    } catch {
      // ENOSPC: full
    } finally {
      closeSync(fd);
    }
    // Give back 2 MiB: enough for the registry's lock, far too little for a machine state.
    spawnSync("truncate", ["-s", "-2M", filler]);
    await assert.rejects(d.takeSnapshot("full", "s1"), (e: { code?: number; message?: string }) => {
      assert.equal(e.code, VmcErrorCodes.HypervisorFailed, e.message);
      assert.match(e.message ?? "", /space|ENOSPC|error/i);
      return true;
    });
    rmSync(filler);
    assert.deepEqual(await d.listSnapshots("full"), [], "no half-made snapshot");
    assert.equal((await d.status("full")).state, "running");
    assert.equal((await d.pause("full")).state, "paused");
    await d.delete("full", { force: true });
  });
});
