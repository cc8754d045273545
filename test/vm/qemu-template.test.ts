/**
 * Instant machines: a template booted once and saved while its agent waits for an identity;
 * clones start from the saved state on their own overlays and each gets its own identity
 * through the identity port (their kernel command line is the template's).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { VmcErrorCodes } from "@vmc/protocol";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { buildTemplate, findTemplate } from "@vmc/server/hypervisors/qemu/template";
import type { BootImage } from "@vmc/server/hypervisors/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { requireComponent } from "../harness/components";
import { qemuInstalled, removeHome, startController, tempHome, testImage, type Controller } from "./harness";

describe("qemu templates (instant machines)", { timeout: 300_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker | undefined;
  let controller: Controller | undefined;
  let image: BootImage;

  before(async () => {
    if (!qemuInstalled) return;
    home = tempHome();
    image = await testImage();
    broker = await startEmbeddedBroker({ port: await freePort() });
    controller = await startController(home, broker.url);
  });
  after(async () => {
    await controller?.close().catch(() => undefined);
    await broker?.stop();
    if (home) removeHome(home);
  });

  it("clones of a saved template start with their own identity", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const c = controller!;
    const driver = new QemuDriver(home);
    assert.equal(findTemplate(home, image.id, 512, 1), undefined);
    const template = await buildTemplate(home, image, { memoryMiB: 512, cpus: 1 });
    const ramBytes = template.ram ? statSync(template.ram).blocks * 512 : 0;
    t.diagnostic(`template: booted to WAITING in ${template.bootMs} ms, device state ${(template.stateBytes / 1048576).toFixed(1)} MiB, RAM file ${Math.round(ramBytes / 1048576)} MiB`);
    assert.ok(ramBytes > 16 << 20, "the template's guest RAM is in its RAM file");
    assert.ok(template.stateBytes > 0 && template.stateBytes < 16 << 20, "the state stream holds the devices, not the RAM");
    assert.equal((await buildTemplate(home, image, { memoryMiB: 512, cpus: 1 })).createdAt, template.createdAt, "built once");

    const key = loadOrCreateControllerKeys(home).publicKey;
    const names = ["clone.a", "clone.b"];
    const records = await Promise.all(names.map((name) => driver.create({ name, image, broker: { host: "127.0.0.1", port: broker!.port }, controllerPublicKey: key })));
    for (const r of records) assert.equal(r.template, template.dir, "created from the template by default");
    const since = Date.now() - 60_000;
    const t0 = Date.now();
    await Promise.all(names.map((n) => driver.start(n)));
    t.diagnostic(`two clones running ${Date.now() - t0} ms after start`);
    const hellos = await Promise.all(names.map((n) => c.waitHello(n, 60_000, since)));
    t.diagnostic(`both agents said HELLO ${Date.now() - t0} ms after start`);
    assert.deepEqual(hellos.map((h) => h.agentId), names);
    assert.notEqual(hellos[0]!.bootId, "", "agents announce a boot id");

    for (const n of names) {
      const out = await c.sh(n, "cat /proc/cmdline; date +%s");
      const [cmdline, now] = out.trim().split("\n");
      assert.match(cmdline ?? "", /vmc_identity=wait/, "restored from the template, not booted");
      assert.doesNotMatch(cmdline ?? "", /vmc_id=/);
      assert.ok(Math.abs(Number(now) - Date.now() / 1000) < 120, `the guest clock was set from the host (${now})`);
    }
    // Separate disks although both come from the same template disk.
    await c.sh("clone.a", "echo a > /var/lib/vmc/home/mine; sync");
    assert.equal((await c.sh("clone.b", "cat /var/lib/vmc/home/mine 2>/dev/null || echo none")).trim(), "none");

    // An in-place restore: the agent is told through the identity port and answers again.
    await driver.takeSnapshot("clone.a", "s");
    await c.sh("clone.a", "echo changed > /var/lib/vmc/home/mine; sync");
    await driver.restoreSnapshot("clone.a", "s");
    assert.equal((await c.sh("clone.a", "cat /var/lib/vmc/home/mine", 60_000)).trim(), "a");
    // A clone's snapshot also loads into a fresh QEMU, whose RAM is not the template's file.
    await driver.stop("clone.a", { force: true });
    await driver.restoreSnapshot("clone.a", "s");
    assert.equal((await c.sh("clone.a", "cat /var/lib/vmc/home/mine", 120_000)).trim(), "a");

    await assert.rejects(driver.delete("clone.b"), (e: { code?: number }) => e.code === VmcErrorCodes.InvalidState);
    await Promise.all(names.map((n) => driver.delete(n, { force: true })));
  });
});
