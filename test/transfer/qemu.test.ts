/**
 * The direct data channel into a real QEMU guest: the agent in the VM listens on guest port 7733,
 * the QEMU driver forwards it to a host loopback port (slirp hostfwd, recorded in vm.json), and
 * the controller dials that port. A few MB go in and come back out, checked by content, and the
 * transfer must have used the direct channel (not the bus fallback).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Hello } from "@vmc/protocol";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { VmStore } from "@vmc/server/store/vms";
import { TransferClient } from "@vmc/server/transfer/client";
import { resolveTransferTarget } from "@vmc/server/transfer/resolve";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { qemuInstalled, removeHome, startController, tempHome, testImage, type Controller } from "../vm/harness";
import { sha256File, tempDir } from "./util";

const VM = "xfer-vm";
const GUEST_DIR = "/var/lib/vmc/home";

describe("direct data channel into a QEMU guest (hostfwd)", { timeout: 420_000 }, () => {
  const dir = tempDir();
  let home: string | undefined;
  let broker: EmbeddedBroker | undefined;
  let controller: Controller | undefined;
  let hello: Hello | undefined;

  before(async () => {
    if (!qemuInstalled) return;
    home = tempHome("vmc-xfer-vm-");
    const image = await testImage();
    broker = await startEmbeddedBroker({ port: await freePort() });
    controller = await startController(home, broker.url);
    const driver = new QemuDriver(home);
    const key = loadOrCreateControllerKeys(home).publicKey;
    await driver.create({ name: VM, image, broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: key, fromTemplate: false });
    await driver.start(VM);
    hello = await controller.waitHello(VM, 240_000);
  });

  after(async () => {
    await controller?.close().catch(() => undefined);
    if (home) removeHome(home);
    await broker?.stop();
    dir.remove();
  });

  test("put and get a few MB through the forwarded port, verified, on the direct channel", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const c = controller!;
    assert.equal(hello!.capabilities.transfer, true, "the guest agent offers transfers");
    assert.equal(hello!.dataEndpoint?.port, 7733, "the guest agent listens on the data port");

    const record = new VmStore(home!).read(VM);
    const forward = record.forwards.find((f) => f.guestPort === 7733);
    assert.ok(forward, "the driver forwards the data port");
    const target = resolveTransferTarget(VM, hello, [record]);
    assert.deepEqual(target.dialEndpoint, { host: "127.0.0.1", port: forward.hostPort });

    const client = new TransferClient({ signingKey: loadOrCreateControllerKeys(home!).privateKey, bus: c.bus });
    const size = 5 * 1024 * 1024 + 12345; // several chunks and a short last one
    const src = join(dir.path, "payload.bin");
    writeFileSync(src, randomBytes(size));
    const want = await sha256File(src);

    const up = await client.put(target, src, `${GUEST_DIR}/payload.bin`, { channel: "auto" });
    assert.equal(up.channel, "direct");
    assert.equal(up.bytesSent, size);
    const inGuest = await c.sh(VM, `sha256sum ${GUEST_DIR}/payload.bin; stat -c %s ${GUEST_DIR}/payload.bin`);
    assert.match(inGuest, new RegExp(`^${want}\\s`), "the guest has the same bytes");
    assert.match(inGuest, new RegExp(`\\n${size}\\n?$`));

    // The guest changes the file, so what comes back is the guest's data, not a host-side leftover.
    await c.sh(VM, `cp ${GUEST_DIR}/payload.bin ${GUEST_DIR}/changed.bin && printf 'guest' | dd of=${GUEST_DIR}/changed.bin bs=1 seek=1000 conv=notrunc 2>/dev/null`);
    const back = join(dir.path, "back.bin");
    const down = await client.get(target, `${GUEST_DIR}/changed.bin`, back, { channel: "auto" });
    assert.equal(down.channel, "direct");
    assert.equal(down.bytes, size);
    const expected = readFileSync(src);
    expected.write("guest", 1000);
    assert.ok(readFileSync(back).equals(expected), "the host has the guest's bytes");
  });
});
