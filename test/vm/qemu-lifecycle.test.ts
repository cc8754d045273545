/**
 * A real QEMU VM (TCG here and in CI) through its whole life: create from the base image, boot to
 * the agent's HELLO, run a command through the bus, pause (a counter in the guest stops), resume,
 * snapshot, change a file, restore (the file and the running counter come back), stop, delete.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, watch as watchFile } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { VmcErrorCodes } from "@vmc/protocol";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import type { BootImage, VmStateEvent } from "@vmc/server/hypervisors/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { requireComponent } from "../harness/components";
import { qemuInstalled, removeHome, startController, tempHome, testImage, type Controller } from "./harness";

const COUNTER = "setsid sh -c 'echo $$ > /tmp/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 &";

describe("qemu VM lifecycle", { timeout: 240_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker | undefined;
  let controller: Controller | undefined;
  let image: BootImage;
  let driver: QemuDriver;

  before(async () => {
    if (!qemuInstalled) return;
    home = tempHome();
    image = await testImage();
    broker = await startEmbeddedBroker({ port: await freePort() });
    controller = await startController(home, broker.url);
    driver = new QemuDriver(home);
  });

  after(async () => {
    await controller?.close().catch(() => undefined);
    await broker?.stop();
    if (home) removeHome(home);
  });

  it("boots, runs, pauses, snapshots, restores, stops and deletes a VM", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const c = controller!;
    const key = loadOrCreateControllerKeys(home).publicKey;
    await driver.create({ name: "vm1", image, broker: { host: "127.0.0.1", port: broker!.port }, controllerPublicKey: key, fromTemplate: false });
    assert.equal((await driver.status("vm1")).state, "stopped");
    // The disk is a linked clone in the layout that keeps savevm after a restore cheap (command.ts).
    const disk = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", driver.files("vm1").disk], { encoding: "utf8" })) as {
      "cluster-size": number; "backing-filename": string; "format-specific": { data: { "extended-l2"?: boolean } };
    };
    assert.equal(disk["backing-filename"], image.baseDisk);
    assert.equal(disk["cluster-size"], 512 << 10);
    assert.equal(disk["format-specific"].data["extended-l2"], true);

    const started = Date.now();
    const status = await driver.start("vm1");
    assert.equal(status.state, "running");
    assert.match(status.accel ?? "", /^(kvm|tcg)$/);
    const events: VmStateEvent[] = [];
    const watch = await driver.watch("vm1", (e) => events.push(e));
    t.after(() => watch.dispose());

    const hello = await c.waitHello("vm1", 90_000);
    t.diagnostic(`agent HELLO ${Date.now() - started} ms after start (${status.accel})`);
    assert.equal(hello.agentId, "vm1");
    assert.equal(hello.os.platform, "linux");

    const out = await c.sh("vm1", "echo hello from $(hostname); cat /proc/cmdline");
    assert.match(out, /hello from vm1/);
    assert.match(out, /vmc_id=vm1/);
    // Under TCG the agent runs from the image's V8 startup snapshot (docs/GUEST.md), not from the
    // code cache that a refused snapshot falls back to.
    const agentArgv = await c.sh("vm1", "tr '\\0' ' ' </proc/$(cat /run/vmc-agent.pid)/cmdline");
    if (status.accel === "tcg") assert.match(agentArgv, /--snapshot-blob \/usr\/lib\/vmc\/agent\.blob/);
    // A TCG guest's CPU has no ERMS (tcgCpu in command.ts): no byte-wise rep string instructions.
    const cpuFlags = await c.sh("vm1", "grep -m1 '^flags' /proc/cpuinfo");
    if (status.accel === "tcg") assert.ok(cpuFlags.includes(" rep_good") && !/\serms\b/.test(cpuFlags), cpuFlags);

    // The system disk is the image file mapped as virtio-pmem and mounted with DAX (command.ts). The
    // guest cannot change it: a write to its last block (padding; direct, past the guest's block cache)
    // is discarded, and the VM lives on.
    assert.match(await c.sh("vm1", "grep ' /usr ' /proc/mounts"), /^\/dev\/pmem0 \/usr ext4 ro,.*dax/);
    const rootfsBytes = statSync(image.rootfs).size;
    const last = rootfsBytes / 4096 - 1;
    const hostBlock = () => {
      const fd = openSync(image.rootfs, "r");
      try {
        const b = Buffer.alloc(4096);
        readSync(fd, b, 0, 4096, last * 4096);
        return b;
      } finally {
        closeSync(fd);
      }
    };
    assert.ok(hostBlock().every((x) => x === 0));
    const guestBlock = await c.sh("vm1", `yes vmc | head -c 4096 | dd of=/dev/pmem0 bs=4096 seek=${last} oflag=direct 2>/dev/null; dd if=/dev/pmem0 bs=4096 skip=${last} count=1 iflag=direct 2>/dev/null | tr -d '\\0' | wc -c`);
    assert.equal(guestBlock.trim(), "0", "the guest reads back what the file holds");
    assert.ok(hostBlock().every((x) => x === 0), "the image file is unchanged");

    // A ticker that writes to the serial console: the host sees each tick in console.log without
    // asking the guest, so "nothing advances while paused" is checked exactly.
    await c.sh("vm1", COUNTER);
    await c.sh("vm1", "setsid sh -c 'i=0; while :; do i=$((i+1)); echo \"vmc-tick $i\" > /dev/ttyS0; sleep 0.2; done' </dev/null >/dev/null 2>&1 &");
    const consoleLog = driver.files("vm1").console;
    const lastTick = () => Math.max(0, ...[...readFileSync(consoleLog, "utf8").matchAll(/vmc-tick (\d+)/g)].map((m) => Number(m[1])));
    const tickAbove = (n: number, timeoutMs: number) =>
      new Promise<number>((resolve, reject) => {
        const check = () => {
          const last = lastTick();
          if (last <= n) return;
          w.close();
          clearTimeout(timer);
          resolve(last);
        };
        const w = watchFile(consoleLog, check);
        const timer = setTimeout(() => {
          w.close();
          reject(new Error(`no tick above ${n} within ${timeoutMs} ms`));
        }, timeoutMs);
        check();
      });
    await tickAbove(3, 30_000);
    await driver.pause("vm1");
    assert.equal((await driver.status("vm1")).state, "paused");
    assert.equal((await driver.pause("vm1")).state, "paused", "pause is idempotent");
    const atPause = lastTick();
    // A command sent while paused does not run until resume.
    const pending = c.sh("vm1", "cat /tmp/counter");
    const raced = await Promise.race([pending.then(() => "ran"), sleep(2500).then(() => "waiting")]);
    assert.equal(raced, "waiting", "nothing runs in a paused guest");
    assert.equal(lastTick(), atPause, "no tick in 2.5 s of pause");
    await driver.resume("vm1");
    assert.ok((await tickAbove(atPause, 30_000)) > atPause, "ticks again after resume");
    await pending;
    assert.ok(events.some((e) => e.state === "paused" && e.cause === "STOP"), "STOP event seen");
    assert.ok(events.some((e) => e.state === "running" && e.cause === "RESUME"), "RESUME event seen");
    const counter = async () => Number((await c.sh("vm1", "cat /tmp/counter")).trim());

    // Snapshot with a file, change the file, let the counter run on, restore.
    await c.sh("vm1", "echo before > /var/lib/vmc/home/file.txt; sync");
    const atSnapshot = await counter();
    const snap = await driver.takeSnapshot("vm1", "s1");
    assert.equal(snap.withMemory, true);
    // The machine state holds the guest's RAM, not the mapped system disk (~110 MiB of it non-zero).
    assert.ok(snap.vmStateBytes! < rootfsBytes, `machine state ${snap.vmStateBytes} bytes, system disk ${rootfsBytes}`);
    assert.deepEqual((await driver.listSnapshots("vm1")).map((s) => s.name), ["s1"]);
    await assert.rejects(driver.takeSnapshot("vm1", "s1"), (e: { code?: number }) => e.code === VmcErrorCodes.AlreadyExists);
    await c.sh("vm1", "echo after > /var/lib/vmc/home/file.txt; sync");
    let later = await counter();
    for (let i = 0; i < 50 && later < atSnapshot + 5; i++) later = await counter();
    assert.ok(later >= atSnapshot + 5);
    // Kill the counter: only the restore can bring the process back.
    await c.sh("vm1", "kill $(cat /tmp/counter.pid); sleep 0.3; echo dead > /tmp/counter; kill -0 $(cat /tmp/counter.pid) 2>/dev/null && echo alive || true");

    const restoredAt = Date.now();
    const restored = await driver.restoreSnapshot("vm1", "s1");
    assert.equal(restored.state, "running");
    t.diagnostic(`restore took ${Date.now() - restoredAt} ms`);
    const back = await c.sh("vm1", "cat /var/lib/vmc/home/file.txt; cat /tmp/counter; kill -0 $(cat /tmp/counter.pid) && echo alive", 60_000);
    t.diagnostic(`agent answered ${Date.now() - restoredAt} ms after the restore began`);
    const [file, count, alive] = back.trim().split("\n");
    assert.equal(file, "before", "the file came back");
    assert.match(count ?? "", /^\d+$/, "the counter file came back");
    assert.equal(alive, "alive", "the killed counter process came back");
    // The window covers the broker dropping the pre-restore connection (≤ 2 heart-beats): what it
    // left unacked is redelivered then, and the kill issued before the restore must not run again.
    const [still, stillAlive] = (await c.sh("vm1", "sleep 4; cat /tmp/counter; kill -0 $(cat /tmp/counter.pid) && echo alive", 60_000)).trim().split("\n");
    assert.ok(Number(still) > Number(count), "the restored counter process is still counting");
    assert.equal(stillAlive, "alive", "no command from before the restore ran again");

    await assert.rejects(driver.restoreSnapshot("vm1", "nope"), (e: { code?: number }) => e.code === VmcErrorCodes.UnknownSnapshot);
    await driver.deleteSnapshot("vm1", "s1");
    assert.deepEqual(await driver.listSnapshots("vm1"), []);

    await assert.rejects(driver.delete("vm1"), (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === "running");
    const stopped = await driver.stop("vm1", { timeoutMs: 30_000 });
    assert.equal(stopped.state, "stopped");
    // The guest shut itself down on the power button, after the restore above too (guest/vmc-shutdown),
    // rather than being made to quit once the graceful wait ran out.
    const shutdowns = events.filter((e) => e.cause === "SHUTDOWN");
    assert.ok(shutdowns.some((e) => e.reason === "guest-shutdown" || e.reason === "guest-reset"), `the guest ended itself: ${JSON.stringify(shutdowns)}`);
    assert.equal((await driver.stop("vm1")).state, "stopped", "stop is idempotent");
    await assert.rejects(driver.pause("vm1"), (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === "stopped");
    await driver.delete("vm1");
    assert.equal(existsSync(driver.store.dir("vm1")), false);
    await assert.rejects(driver.status("vm1"), (e: { code?: number }) => e.code === VmcErrorCodes.UnknownVm);
  });

  it("runs two VMs from one base at once, each with its own disk", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const c = controller!;
    const key = loadOrCreateControllerKeys(home).publicKey;
    const names = ["twin.a", "twin.b"];
    await Promise.all(names.map((name) => driver.create({ name, image, broker: { host: "127.0.0.1", port: broker!.port }, controllerPublicKey: key, fromTemplate: false })));
    const statuses = await Promise.all(names.map((n) => driver.start(n)));
    assert.notEqual(statuses[0]!.pid, statuses[1]!.pid);
    await Promise.all(names.map((n) => c.waitHello(n, 120_000)));
    await c.sh("twin.a", "echo mine > /var/lib/vmc/home/only-a; sync");
    const [a, b] = await Promise.all(names.map((n) => c.sh(n, "hostname; cat /var/lib/vmc/home/only-a 2>/dev/null || echo none")));
    assert.deepEqual(a!.trim().split("\n"), ["twin.a", "mine"]);
    assert.deepEqual(b!.trim().split("\n"), ["twin.b", "none"], "the twins do not share a disk");
    await Promise.all(names.map((n) => driver.delete(n, { force: true })));
    assert.deepEqual(driver.store.list().filter((r) => names.includes(r.name)), []);
  });
});
