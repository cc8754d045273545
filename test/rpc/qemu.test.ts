/**
 * A real QEMU VM driven only through `vmc rpc`: create from the guest image, start waiting for the
 * agent's HELLO, `cmd.run uname`, pause/resume (with notifications), snapshot take/list/restore,
 * stop, delete.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import type { CommandRecord, SnapshotInfo, VmInfo, VmStateChange } from "@vmc/protocol/rpc";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { qemuInstalled, killVms, testImage } from "../vm/harness";
import { startEndpoint, tempDir, type RpcProcess } from "./harness";

const stateChange = (state: string) => (n: { method: string; params?: unknown }) => n.method === "vm.stateChanged" && (n.params as VmStateChange).state === state;

describe("a QEMU VM through the controller API", { timeout: 300_000 }, () => {
  let broker: EmbeddedBroker | undefined;
  let rpc: RpcProcess | undefined;
  const home = tempDir("vmc-rpc-qemu-");

  before(async () => {
    if (!qemuInstalled) return;
    broker = await startEmbeddedBroker();
  });
  after(async () => {
    await rpc?.kill();
    killVms(home.path);
    home.remove();
    await broker?.stop();
  });

  it("create, start with waitForAgent, cmd.run uname, pause, resume, snapshot, restore, stop, delete", async (t) => {
    if (!requireComponent(t, "qemu", qemuInstalled)) return;
    const image = await testImage();
    rpc = await startEndpoint("rpc-lsp", { home: home.path, broker: broker!.url });
    const created = await rpc.request<VmInfo>("vm.create", { name: "q1", driver: "qemu", image: dirname(image.kernel), fromTemplate: false, memoryMiB: 256 }, 120_000);
    assert.equal(created.state, "stopped");
    assert.equal(created.driver, "qemu");

    const t0 = Date.now();
    const started = await rpc.request<VmInfo>("vm.start", { name: "q1", waitForAgent: true, agentTimeoutMs: 150_000 }, 170_000);
    t.diagnostic(`vm.start answered ${Date.now() - t0} ms after the request, agent online`);
    assert.equal(started.state, "running");
    assert.equal(started.agentOnline, true);

    const uname = await rpc.request<CommandRecord>("cmd.run", { target: "q1", argv: ["uname", "-s"], wait: true, timeoutMs: 60_000 }, 90_000);
    assert.equal(uname.targets[0]!.status, "succeeded", JSON.stringify(uname.targets[0]));
    assert.equal(Buffer.from(uname.targets[0]!.stdout.data, "base64").toString().trim(), "Linux");

    assert.equal((await rpc.request<VmInfo>("vm.pause", { name: "q1" })).state, "paused");
    await rpc.waitNotification(stateChange("paused"), 10_000, "vm.stateChanged paused");
    assert.equal((await rpc.request<VmInfo>("vm.resume", { name: "q1" })).state, "running");

    const snap = await rpc.request<SnapshotInfo>("vm.snapshot.take", { name: "q1", snapshot: "base" }, 120_000);
    assert.equal(snap.withMemory, true);
    assert.deepEqual((await rpc.request<SnapshotInfo[]>("vm.snapshot.list", { name: "q1" })).map((s) => s.name), ["base"]);
    const marked = await rpc.request<CommandRecord>("cmd.run", { target: "q1", argv: ["sh", "-c", "echo changed > /tmp/mark"], wait: true, timeoutMs: 60_000 }, 90_000);
    assert.equal(marked.targets[0]!.status, "succeeded");
    const restored = await rpc.request<VmInfo>("vm.snapshot.restore", { name: "q1", snapshot: "base" }, 120_000);
    assert.equal(restored.state, "running");
    const after = await rpc.request<CommandRecord>("cmd.run", { target: "q1", argv: ["sh", "-c", "cat /tmp/mark 2>/dev/null || echo absent"], wait: true, timeoutMs: 60_000 }, 90_000);
    assert.equal(Buffer.from(after.targets[0]!.stdout.data, "base64").toString().trim(), "absent", "the restore rolled the guest back");

    const stopped = await rpc.request<VmInfo>("vm.stop", { name: "q1", timeoutMs: 20_000 }, 60_000);
    assert.equal(stopped.state, "stopped");
    await rpc.waitNotification(stateChange("stopped"), 10_000, "vm.stateChanged stopped");
    assert.equal(await rpc.request("vm.delete", { name: "q1" }), null);
    assert.deepEqual(await rpc.request("vm.list"), []);
  });
});
