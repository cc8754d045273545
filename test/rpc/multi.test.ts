/**
 * Several controllers on one $VMC_HOME and broker (an editor window and a BOINC wrapper): each sees
 * the other's VM changes as notifications, concurrent operations on one VM do not corrupt it, and
 * a controller killed between `cmd.run` and `cmd.get` loses nothing: its successor reports the
 * command's result; results stay readable until the expiry policy removes them. The bus going
 * away and back is reported as `broker.state`.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { AgentInfo, CommandRecord, SnapshotInfo, VmInfo, VmStateChange } from "@vmc/protocol/rpc";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { VmcErrorCodes } from "@vmc/protocol/errors";
import { freePort } from "../harness/ports";
import { errorOf, RpcProcess, startEndpoint, tempDir } from "./harness";

const change = (name: string, match: (c: VmStateChange) => boolean) => (n: { method: string; params?: unknown }) =>
  n.method === "vm.stateChanged" && (n.params as VmStateChange).name === name && match(n.params as VmStateChange);

describe("several controllers on one home and broker", () => {
  let broker: EmbeddedBroker;
  const home = tempDir("vmc-rpc-multi-");
  const endpoints: RpcProcess[] = [];
  const start = async (kind: "rpc-lsp" | "rpc-ndjson" | "serve") => {
    const e = await startEndpoint(kind, { home: home.path, broker: broker.url });
    endpoints.push(e);
    return e;
  };

  before(async () => {
    broker = await startEmbeddedBroker();
  });
  after(async () => {
    for (const e of endpoints) await e.kill();
    const driver = new ProcessDriver(home.path);
    for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
    home.remove();
    await broker?.stop();
  });

  it("two controllers at once: each sees the other's changes; concurrent snapshots both land", async () => {
    const a = await start("rpc-lsp");
    const b = await start("serve");
    await a.request<VmInfo>("vm.create", { name: "shared", driver: "process" });
    await b.waitNotification(change("shared", (c) => c.cause === "created"), 10_000, "B: created by A");
    assert.deepEqual((await b.request<VmInfo[]>("vm.list")).map((v) => v.name), ["shared"]);

    const started = await b.request<VmInfo>("vm.start", { name: "shared", waitForAgent: true }, 40_000);
    assert.equal(started.agentOnline, true);
    await a.waitNotification(change("shared", (c) => c.state === "running"), 10_000, "A: started by B");
    await a.waitNotification((n) => n.method === "agent.changed" && (n.params as AgentInfo).agentId === "shared" && (n.params as AgentInfo).online, 10_000, "A: agent online");

    await a.request("vm.pause", { name: "shared" });
    await b.waitNotification(change("shared", (c) => c.state === "paused"), 10_000, "B: paused by A");
    await b.request("vm.resume", { name: "shared" });
    await a.waitNotification(change("shared", (c) => c.state === "running" && c.previous === "paused"), 10_000, "A: resumed by B");

    const [sa, sb] = await Promise.all([
      a.request<SnapshotInfo>("vm.snapshot.take", { name: "shared", snapshot: "from-a" }, 60_000),
      b.request<SnapshotInfo>("vm.snapshot.take", { name: "shared", snapshot: "from-b" }, 60_000),
    ]);
    assert.equal(sa.name, "from-a");
    assert.equal(sb.name, "from-b");
    assert.deepEqual((await a.request<SnapshotInfo[]>("vm.snapshot.list", { name: "shared" })).map((s) => s.name).sort(), ["from-a", "from-b"]);

    await a.request("vm.delete", { name: "shared", force: true }, 30_000);
    await b.waitNotification(change("shared", (c) => c.cause === "deleted"), 10_000, "B: deleted by A");
    assert.deepEqual(await b.request("vm.list"), []);
  });

  it("a controller killed between cmd.run and cmd.get: its successor has the result", async () => {
    const a = await start("rpc-ndjson");
    await a.request("vm.create", { name: "r1", driver: "process" });
    await a.request("vm.start", { name: "r1", waitForAgent: true }, 40_000);
    const run = await a.request<CommandRecord>("cmd.run", { target: "r1", argv: ["sh", "-c", "sleep 1; echo survived"] });
    assert.equal(run.state, "running");
    await a.kill();

    const a2 = await start("rpc-lsp");
    let record = await a2.request<CommandRecord>("cmd.get", { id: run.id });
    assert.equal(record.id, run.id, "the command is in the history after the restart");
    if (record.state !== "finished") {
      const finished = await a2.waitNotification((n) => n.method === "cmd.finished" && (n.params as CommandRecord).id === run.id, 30_000, "cmd.finished after restart");
      record = finished.params as CommandRecord;
    }
    assert.equal(record.targets[0]!.status, "succeeded");
    assert.equal(Buffer.from(record.targets[0]!.stdout.data, "base64").toString(), "survived\n");
    assert.deepEqual(await a2.request<CommandRecord>("cmd.get", { id: run.id }), record, "read again: the same result");
    await a2.request("vm.delete", { name: "r1", force: true }, 30_000);
  });

  it("results are read as often as wanted and expire by policy, not by reading (VMC_COMMANDS_MAX_COUNT)", async () => {
    const own = tempDir("vmc-rpc-expiry-");
    const env = { VMC_COMMANDS_MAX_COUNT: "2" };
    const first = new RpcProcess("rpc-ndjson", { home: own.path, broker: broker.url, env });
    endpoints.push(first);
    try {
      await first.request("vmc.handshake");
      await first.request("vm.create", { name: "x1", driver: "process" });
      await first.request("vm.start", { name: "x1", waitForAgent: true }, 40_000);
      const ids: string[] = [];
      for (const word of ["one", "two", "three"]) {
        const r = await first.request<CommandRecord>("cmd.run", { target: "x1", argv: ["echo", word], wait: true }, 30_000);
        assert.equal(r.targets[0]!.status, "succeeded", JSON.stringify(r.targets[0]));
        ids.push(r.id);
      }
      for (let i = 0; i < 3; i++) {
        for (const [n, id] of ids.entries()) {
          const got = await first.request<CommandRecord>("cmd.get", { id });
          assert.equal(Buffer.from(got.targets[0]!.stdout.data, "base64").toString(), `${["one", "two", "three"][n]}\n`, "reading does not consume a result");
        }
      }
      await first.request("shutdown");
      await first.notify("exit");
      assert.deepEqual(await first.exited, { code: 0, signal: null });

      // A controller prunes the history when it opens it: the oldest beyond the count is gone.
      const second = new RpcProcess("rpc-lsp", { home: own.path, broker: broker.url, env });
      endpoints.push(second);
      await second.request("vmc.handshake");
      assert.equal(errorOf(await second.call("cmd.get", { id: ids[0] })).code, VmcErrorCodes.UnknownCommand, "expired by count");
      for (const id of ids.slice(1)) assert.equal((await second.request<CommandRecord>("cmd.get", { id })).state, "finished");
      assert.deepEqual((await second.request<Array<{ id: string }>>("cmd.list")).map((c) => c.id), [ids[2], ids[1]]);
      await second.request("vm.delete", { name: "x1", force: true }, 30_000);
    } finally {
      const driver = new ProcessDriver(own.path);
      for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
      own.remove();
    }
  });

  it("an endpoint started before its broker answers BrokerUnavailable, then serves once the broker is up", async () => {
    const port = await freePort();
    const url = `stomp://127.0.0.1:${port}`;
    const e = new RpcProcess("rpc-ndjson", { home: home.path, broker: url });
    endpoints.push(e);
    const early = await e.call("vm.list", undefined, 60_000);
    assert.equal(errorOf(early).code, VmcErrorCodes.BrokerUnavailable);
    const late = await startEmbeddedBroker({ port });
    try {
      // it retries on its own (backoff up to 10 s) and says so when it is up
      await e.waitStderr(/controller up after \d+ failed attempt/, 60_000);
      const hs = await e.request<{ broker: string; brokerConnected: boolean }>("vmc.handshake");
      assert.equal(hs.broker, url);
      assert.equal(hs.brokerConnected, true);
      assert.ok(Array.isArray(await e.request("vm.list")));
    } finally {
      await e.kill();
      await late.stop();
    }
  });

  it("broker.state: the endpoint reports the bus going down and coming back, and keeps serving", async () => {
    const e = await start("rpc-ndjson");
    await broker.kill();
    const down = await e.waitNotification((n) => n.method === "broker.state" && (n.params as { connected: boolean }).connected === false, 30_000, "broker.state down");
    assert.equal((down.params as { broker: string }).broker, broker.url);
    assert.equal((await e.request<{ brokerConnected: boolean }>("vmc.handshake")).brokerConnected, false);
    assert.deepEqual(await e.request("vm.list"), [], "VM methods work without the bus");
    await broker.restart();
    await e.waitNotification((n) => n.method === "broker.state" && (n.params as { connected: boolean }).connected === true, 60_000, "broker.state up");
    assert.equal((await e.request<{ brokerConnected: boolean }>("vmc.handshake")).brokerConnected, true);
  });
});
