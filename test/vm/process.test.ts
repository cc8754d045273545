/**
 * The process driver (the stand-in when no hypervisor exists): a real agent process tree on the
 * host, frozen on pause, its directory copied for a snapshot.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VmcErrorCodes } from "@vmc/protocol";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { removeHome, startController, tempHome, type Controller } from "./harness";

describe("process driver", { timeout: 120_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker;
  let controller: Controller;
  let driver: ProcessDriver;

  before(async () => {
    home = tempHome();
    broker = await startEmbeddedBroker({ port: await freePort() });
    controller = await startController(home, broker.url);
    driver = new ProcessDriver(home);
  });
  after(async () => {
    for (const r of driver?.store.list() ?? []) await driver.delete(r.name, { force: true }).catch(() => undefined);
    await controller?.close().catch(() => undefined);
    await broker?.stop();
    if (home) removeHome(home);
  });

  it("runs an agent as a VM: command, pause, snapshot of its files, restore, stop, delete", async () => {
    const c = controller;
    await driver.create({ name: "p1", broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: loadOrCreateControllerKeys(home).publicKey });
    const started = await driver.start("p1");
    assert.equal(started.state, "running");
    assert.equal(started.accel, "process");
    await c.waitHello("p1", 30_000);
    const home1 = (await c.sh("p1", "echo $HOME")).trim();
    assert.equal(home1, join(driver.store.dir("p1"), "root", "home"), "the VM lives in its own directory");

    await driver.pause("p1");
    assert.equal((await driver.status("p1")).state, "paused");
    const pending = c.sh("p1", "echo ran");
    assert.equal(await Promise.race([pending.then(() => "ran"), sleep(1500).then(() => "waiting")]), "waiting", "a frozen agent runs nothing");
    await driver.resume("p1");
    assert.equal((await pending).trim(), "ran");

    await c.sh("p1", "echo before > $HOME/file.txt");
    const snap = await driver.takeSnapshot("p1", "s1");
    assert.equal(snap.withMemory, false, "directory snapshots hold no processes");
    await c.sh("p1", "echo after > $HOME/file.txt");
    await driver.restoreSnapshot("p1", "s1");
    const since = Date.now() - 1000;
    await c.waitHello("p1", 30_000, since);
    assert.equal((await c.sh("p1", "cat $HOME/file.txt")).trim(), "before");
    await assert.rejects(driver.restoreSnapshot("p1", "none"), (e: { code?: number }) => e.code === VmcErrorCodes.UnknownSnapshot);

    await assert.rejects(driver.delete("p1"), (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === "running");
    assert.equal((await driver.stop("p1", { timeoutMs: 5000 })).state, "stopped");
    await assert.rejects(driver.pause("p1"), (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === "stopped");
    await driver.delete("p1");
    assert.equal(existsSync(driver.store.dir("p1")), false);
  });
});
