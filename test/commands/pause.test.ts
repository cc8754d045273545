/**
 * Pause-aware timeouts with the process driver (pause = freeze the VM's process tree while the
 * host clock runs on): a command's timeout, and the controller's own deadline after it, count
 * only the time the VM ran.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type { CommandRecord } from "@vmc/protocol/rpc";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { removeHome, tempHome } from "../vm/harness";
import { ControllerProcess } from "./helpers";

/** Controller deadline = timeout + this: well inside the pause, so a deadline that ran on would fire. */
const RESULT_GRACE_MS = 500;

describe("pause-aware timeouts (process driver)", { timeout: 120_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker;
  let driver: ProcessDriver;
  let c: ControllerProcess | undefined;

  before(async () => {
    home = tempHome("vmc-cmd-pause-");
    broker = await startEmbeddedBroker({ port: await freePort() });
    driver = new ProcessDriver(home);
    await driver.create({ name: "p1", broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: loadOrCreateControllerKeys(home).publicKey });
    await driver.start("p1");
    c = await ControllerProcess.start(home, broker.url, { vms: { p1: "p1" }, resultGraceMs: RESULT_GRACE_MS });
    assert.equal(await c.request("waitAgent", { agentId: "p1", timeoutMs: 30_000 }), true);
  });
  after(async () => {
    await c?.kill();
    await driver?.delete("p1", { force: true }).catch(() => undefined);
    await broker?.stop();
    if (home) removeHome(home);
  });

  it("timeout 3 s, sleep 5, paused 4 s mid-way: succeeds", async (t) => {
    const sent = await c!.request<CommandRecord>("run", { target: "p1", argv: ["echo go; sleep 5; echo end"], shell: true, timeoutMs: 3000 });
    await c!.output(sent.id, "go", 20_000);
    const t0 = Date.now();
    await driver.pause("p1");
    const pausedAt = Date.now();
    await c!.request("vmState", { name: "p1", state: "paused" });
    await sleep(4000); // the suspend being simulated, not a wait for an event
    await driver.resume("p1");
    const resumedAt = Date.now();
    await c!.request("vmState", { name: "p1", state: "running" });
    const done = await c!.finished(sent.id, 30_000);
    const target = done.targets[0]!;
    const timeline = `sent ${sent.submittedAt}, started ${target.startedAt}, go seen ${t0}, paused ${pausedAt}, resumed ${resumedAt}, agent wall ${target.resources?.wallMs} ms`;
    t.diagnostic(timeline);
    assert.equal(target.status, "succeeded", `${target.status}: ${target.reason ?? ""} (${timeline})`);
    assert.match(Buffer.from(target.stdout.data, "base64").toString(), /go\nend\n/);
    assert.ok(Date.now() - t0 >= 4000, "the command outlived its timeout in wall-clock time");
  });

  it("the same command without a pause times out", async () => {
    const sent = await c!.request<CommandRecord>("run", { target: "p1", argv: ["echo go; sleep 5; echo end"], shell: true, timeoutMs: 3000 });
    const done = await c!.finished(sent.id, 30_000);
    assert.equal(done.targets[0]!.status, "timedOut", done.targets[0]!.reason);
  });
});
