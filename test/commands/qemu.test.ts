/**
 * Pause-aware timeouts and snapshot epochs on a real QEMU VM (TCG): a 3 s timeout across a pause,
 * and commands rolled back by a restore (told by the controller, or refused by the agent).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type { CommandRecord } from "@vmc/protocol/rpc";
import type { BootImage } from "@vmc/server/hypervisors/driver";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { killVms, qemuInstalled, removeHome, tempHome, testImage } from "../vm/harness";
import { ControllerProcess, text } from "./helpers";

/**
 * Controller deadline = timeout + this, counted from sending (8 s). It falls inside the pause below,
 * so a deadline that ran on through the pause would fire; it also leaves a slow TCG guest (up to
 * ~3 s from send to first output here) time to finish after the resume. Hence a 10 s pause here
 * (4 s in the process-driver test, where the guest is the host).
 */
const RESULT_GRACE_MS = 5000;
const PAUSE_MS = 10_000;

describe("commands on a QEMU VM", { timeout: 420_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker | undefined;
  let driver: QemuDriver;
  let image: BootImage;
  let c: ControllerProcess | undefined;

  before(async () => {
    if (!qemuInstalled) return;
    home = tempHome("vmc-cmd-qemu-");
    image = await testImage();
    broker = await startEmbeddedBroker({ port: await freePort() });
    driver = new QemuDriver(home);
    await driver.create({ name: "q1", image, broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: loadOrCreateControllerKeys(home).publicKey });
    await driver.start("q1");
    c = await ControllerProcess.start(home, broker.url, { vms: { q1: "q1" }, resultGraceMs: RESULT_GRACE_MS });
    assert.equal(await c.request("waitAgent", { agentId: "q1", timeoutMs: 180_000 }), true, "the guest agent came online");
    // The first commands in a fresh TCG guest take seconds to start (cold caches): not what is timed below.
    for (let i = 0; i < 2; i++) await c.request<CommandRecord>("run", { target: "q1", argv: ["echo warm"], shell: true, wait: true });
  });
  after(async () => {
    await c?.kill();
    if (home) {
      await driver?.delete("q1", { force: true }).catch(() => undefined);
      killVms(home);
    }
    await broker?.stop();
    if (home) removeHome(home);
  });

  const run = (params: object) => c!.request<CommandRecord>("run", { target: "q1", ...params });
  const runWait = async (script: string) => {
    const r = await c!.request<CommandRecord>("run", { target: "q1", argv: [script], shell: true, wait: true });
    assert.equal(r.targets[0]!.status, "succeeded", r.targets[0]!.reason);
    return text(r.targets[0]!.stdout.data);
  };
  const pause = async () => {
    await driver.pause("q1");
    await c!.request("vmState", { name: "q1", state: "paused" });
  };
  const resume = async () => {
    await driver.resume("q1");
    await c!.request("vmState", { name: "q1", state: "running" });
  };

  it("timeout 3 s, 1 s of work, paused 10 s mid-way: succeeds; 5 s of work without a pause: timedOut", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const sent = await run({ argv: ["echo go; sleep 1; echo end"], shell: true, timeoutMs: 3000 });
    await c!.output(sent.id, "go", 30_000);
    const t0 = Date.now();
    await pause();
    await sleep(PAUSE_MS); // the suspend being simulated
    await resume();
    const done = await c!.finished(sent.id, 60_000);
    t.diagnostic(`finished ${Date.now() - t0} ms after go: ${JSON.stringify({ ...done.targets[0], stdout: text(done.targets[0]!.stdout.data) })}`);
    assert.equal(done.targets[0]!.status, "succeeded", `${done.targets[0]!.status}: ${done.targets[0]!.reason ?? ""}`);
    assert.equal(text(done.targets[0]!.stdout.data), "go\nend\n");
    assert.ok(Date.now() - t0 > PAUSE_MS, "the command outlived timeout + grace in wall-clock time");

    const slow = await run({ argv: ["echo go; sleep 5; echo end"], shell: true, timeoutMs: 3000 });
    const over = await c!.finished(slow.id, 60_000);
    assert.equal(over.targets[0]!.status, "timedOut", over.targets[0]!.reason);
  });

  it("a restore rolls back the commands sent after the snapshot; finished ones keep their results", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const snap = await driver.takeSnapshot("q1", "s1");
    const kept = await run({ argv: ["echo kept"], shell: true, wait: true });
    assert.equal(kept.targets[0]!.status, "succeeded");
    const long = await run({ argv: ["echo go; sleep 30"], shell: true });
    await c!.output(long.id, "go", 30_000);
    await driver.restoreSnapshot("q1", "s1");
    const restoredAt = Date.now();
    await c!.request("restored", { vm: "q1", agentId: "q1", takenAt: snap.createdAt, snapshot: "s1" });
    const rolled = await c!.finished(long.id, 5_000);
    assert.ok(Date.now() - restoredAt < 5_000, "reported at once, not after the command's 30 s");
    assert.equal(rolled.targets[0]!.status, "rolledBack");
    assert.match(rolled.targets[0]!.reason ?? "", /rolled back by restore of snapshot s1/);
    const still = await c!.request<CommandRecord>("get", { id: kept.id });
    assert.equal(still.targets[0]!.status, "succeeded", "a command that finished keeps its result");
    assert.equal(text(still.targets[0]!.stdout.data), "kept\n");
  });
});
