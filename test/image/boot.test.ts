/**
 * The real image boots in real QEMU (TCG) with the real agent, which says HELLO on the embedded
 * broker with the id given on the kernel command line; an ACPI power-down makes the agent say BYE
 * and QEMU exit.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { Bye, Destinations, Hello, PresenceMessage } from "@vmc/protocol/bus";
import { generateControllerKeyPair } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import type { GuestImage } from "@vmc/server/image/index";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { bootGuest, imageToolsPresent, qemuPresent, testImage, type BootedGuest } from "./fixture";

const BOOT_DEADLINE_MS = 240_000;
const POWERDOWN_DEADLINE_MS = 60_000;

let broker: EmbeddedBroker | undefined;
let bus: BusClient | undefined;
let guest: BootedGuest | undefined;
after(async () => {
  await guest?.destroy();
  await bus?.close();
  await broker?.stop();
});

function within<T>(ms: number, what: string, p: Promise<T>, context: () => string = () => ""): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms\n${context()}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test("the guest boots to the agent's HELLO and powers down on the ACPI button", async (t) => {
  if (!requireComponent(t, "qemu-system-x86 and qemu-utils", qemuPresent())) return;
  if (!requireComponent(t, "apt-get, e2fsprogs and zstd", imageToolsPresent())) return;
  const image: GuestImage = await testImage({ onProgress: (m) => t.diagnostic(m) });

  broker = await startEmbeddedBroker();
  bus = new BusClient({ brokerUrl: broker.url, name: "image-test" });
  await bus.connect(10_000);
  const agentId = `img-${randomBytes(4).toString("hex")}`;
  const seen: PresenceMessage[] = [];
  let notify = () => {};
  const sub = bus.subscribeJson(Destinations.presence, PresenceMessage, (m) => {
    if (m.agentId === agentId) {
      seen.push(m);
      notify();
    }
  });
  await sub.ready;
  const waitFor = <T extends PresenceMessage>(pred: (m: PresenceMessage) => m is T) =>
    new Promise<T>((resolve) => {
      const check = () => {
        const hit = seen.find(pred);
        if (hit) resolve(hit);
      };
      notify = check;
      check();
    });

  const key = generateControllerKeyPair().publicKey;
  const started = performance.now();
  guest = await bootGuest(image, broker.port, `vmc_id=${agentId} vmc_broker=stomp://10.0.2.100:61613 vmc_key=${key}`);
  const hello = await within(BOOT_DEADLINE_MS, "HELLO", Promise.race([
    waitFor((m): m is Hello => m.type === "HELLO"),
    guest.exited.then((code) => Promise.reject(new Error(`QEMU exited (${code}) before HELLO:\n${guest!.console()}`))),
  ]), () => guest!.console());
  t.diagnostic(`HELLO ${Math.round(performance.now() - started)} ms after QEMU start`);
  assert.equal(hello.agentId, agentId);
  assert.equal(hello.os.platform, "linux");
  assert.equal(hello.os.hostname, agentId, "init names the machine after vmc_id");
  assert.ok(image.agentVersion.startsWith(`${hello.agentVersion}+`), `image agent ${image.agentVersion} vs HELLO ${hello.agentVersion}`);
  assert.match(guest.console(), /vmc-init: agent start/);

  await guest.qmp("system_powerdown");
  const bye = await within(POWERDOWN_DEADLINE_MS, "BYE after power button", waitFor((m): m is Bye => m.type === "BYE"), () => guest!.console());
  assert.equal(bye.bootId, hello.bootId);
  const code = await within(POWERDOWN_DEADLINE_MS, "QEMU exit after power-down", guest.exited, () => guest!.console());
  assert.equal(code, 0);
  assert.match(guest.console(), /vmc-init: shutting down/);
});
