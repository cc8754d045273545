/**
 * Every controller-API method on every endpoint (`vmc rpc` in both framings, `vmc serve --stdio`),
 * as real processes against the embedded broker (its own process) with process-driver VMs whose
 * agents are real agent processes: results, notifications and the error codes.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { RpcErrorCodes, VmcErrorCodes } from "@vmc/protocol/errors";
import type { AgentInfo, CommandRecord, FileTransferResult, Handshake, SnapshotInfo, VmInfo, VmStateChange } from "@vmc/protocol/rpc";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { ENDPOINTS, errorOf, startEndpoint, tempDir, type RpcProcess } from "./harness";

const stateChange = (name: string, state: string) => (n: { method: string; params?: unknown }) =>
  n.method === "vm.stateChanged" && (n.params as VmStateChange).name === name && (n.params as VmStateChange).state === state;

describe("controller API on every endpoint", () => {
  let broker: EmbeddedBroker;
  const homes: Array<{ path: string; remove(): void }> = [];
  const endpoints: RpcProcess[] = [];

  before(async () => {
    broker = await startEmbeddedBroker();
  });
  after(async () => {
    for (const e of endpoints) await e.kill();
    for (const h of homes) {
      const driver = new ProcessDriver(h.path);
      for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
      h.remove();
    }
    await broker?.stop();
  });

  for (const kind of ENDPOINTS) {
    it(`${kind}: handshake, VM lifecycle, snapshots, agents, files, errors, notifications`, async () => {
      const home = tempDir(`vmc-rpc-${kind}-`);
      homes.push(home);
      const rpc = await startEndpoint(kind, { home: home.path, broker: broker.url });
      endpoints.push(rpc);
      const vm = `p-${kind}`;

      const hs = await rpc.request<Handshake>("vmc.handshake", { client: "protocol.test" });
      assert.equal(hs.protocolVersion, 1);
      assert.equal(hs.broker, broker.url);
      assert.equal(hs.brokerConnected, true);
      assert.equal(hs.home, home.path);
      assert.ok(hs.drivers.some((d) => d.name === "process" && d.available));

      // invalid params name the field and the reason
      const bad = errorOf(await rpc.call("vm.create", { name: "no spaces allowed", driver: "process" }));
      assert.equal(bad.code, RpcErrorCodes.InvalidParams);
      assert.match(bad.message, /params\.name: a VM name is/);
      assert.deepEqual((bad.data as { issues: Array<{ path: unknown[] }> }).issues[0]!.path, ["name"]);
      const badType = errorOf(await rpc.call("vm.create", { name: vm, memoryMiB: "lots" }));
      assert.equal(badType.code, RpcErrorCodes.InvalidParams);
      assert.match(badType.message, /params\.memoryMiB/);
      const extra = errorOf(await rpc.call("vm.list", { surprise: 1 }));
      assert.equal(extra.code, RpcErrorCodes.InvalidParams);
      assert.match(extra.message, /surprise/);
      assert.equal(errorOf(await rpc.call("vm.nonsense", {})).code, RpcErrorCodes.MethodNotFound);
      // params by position: [] is no params, [{...}] the object (some clients send these)
      assert.deepEqual(await rpc.request("vm.list", []), []);
      assert.equal((await rpc.request<Handshake>("vmc.handshake", [{ client: "by-position" }])).protocolVersion, 1);
      assert.equal(errorOf(await rpc.call("vm.start", [])).code, RpcErrorCodes.InvalidParams);
      assert.doesNotMatch(rpc.stderr, /initialized/, "LSP's initialized notification is accepted silently");

      // unknown VM
      const unknown = errorOf(await rpc.call("vm.start", { name: "ghost" }));
      assert.equal(unknown.code, VmcErrorCodes.UnknownVm);
      assert.deepEqual(unknown.data, { name: "ghost" });
      // a driver that is not installed here
      const notHere = errorOf(await rpc.call("vm.create", { name: "vb", driver: "virtualbox" }));
      assert.equal(notHere.code, VmcErrorCodes.NotSupported);
      assert.equal((notHere.data as { driver: string }).driver, "virtualbox");

      // create → notification, listed
      const created = await rpc.request<VmInfo>("vm.create", { name: vm, driver: "process", workDoneToken: "create-1" });
      assert.equal(created.state, "stopped");
      assert.equal(created.driver, "process");
      assert.equal(created.agentOnline, false);
      await rpc.waitNotification((n) => n.method === "vm.stateChanged" && (n.params as VmStateChange).name === vm && (n.params as VmStateChange).cause === "created", 10_000, "vm.stateChanged created");
      await rpc.waitNotification((n) => n.method === "$/progress" && (n.params as { token: string }).token === "create-1", 10_000, "$/progress for vm.create");
      assert.equal(errorOf(await rpc.call("vm.create", { name: vm, driver: "process" })).code, VmcErrorCodes.AlreadyExists);
      assert.deepEqual((await rpc.request<VmInfo[]>("vm.list")).map((v) => v.name), [vm]);

      // wrong state names the state
      const wrong = errorOf(await rpc.call("vm.pause", { name: vm }));
      assert.equal(wrong.code, VmcErrorCodes.InvalidState);
      assert.equal((wrong.data as { state: string }).state, "stopped");
      assert.match(wrong.message, /stopped/);

      // start, waiting for the agent's HELLO
      const started = await rpc.request<VmInfo>("vm.start", { name: vm, waitForAgent: true, agentTimeoutMs: 30_000 }, 40_000);
      assert.equal(started.state, "running");
      assert.equal(started.agentOnline, true, "answered after the agent said HELLO");
      await rpc.waitNotification(stateChange(vm, "running"), 10_000, "vm.stateChanged running");
      await rpc.waitNotification((n) => n.method === "agent.changed" && (n.params as AgentInfo).agentId === vm && (n.params as AgentInfo).online, 10_000, "agent.changed online");
      const agents = await rpc.request<AgentInfo[]>("agent.list", { target: vm });
      assert.equal(agents.length, 1);
      assert.equal(agents[0]!.vm, vm);
      assert.equal(agents[0]!.online, true);
      assert.deepEqual(await rpc.request<AgentInfo[]>("agent.list", { target: "nobody-*" }), []);

      // files: put, then get back, with progress
      const files = tempDir("vmc-rpc-files-");
      homes.push(files);
      const src = join(files.path, "input.bin");
      const payload = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
      payload.write(`hello from ${kind}`);
      writeFileSync(src, payload);
      const put = await rpc.request<FileTransferResult>("file.put", { sources: [src], destination: { target: vm, path: "/tmp/input.bin" }, workDoneToken: 42 });
      assert.equal(put.files, 1);
      assert.equal(put.bytes, payload.length);
      await rpc.waitNotification((n) => n.method === "$/progress" && (n.params as { token: number; value: { kind: string } }).token === 42 && (n.params as { value: { kind: string } }).value.kind === "end", 10_000, "$/progress end");
      mkdirSync(join(files.path, "back"));
      const got = await rpc.request<FileTransferResult>("file.get", { sources: [{ target: vm, path: "/tmp/input.bin" }], destination: join(files.path, "back") });
      assert.equal(got.bytes, payload.length);
      assert.ok(readFileSync(join(files.path, "back", "input.bin")).equals(payload), "the file came back intact");
      const missing = errorOf(await rpc.call("file.get", { sources: [{ target: vm, path: "/no/such/file" }], destination: join(files.path, "back") }));
      assert.equal(missing.code, VmcErrorCodes.TransferFailed);

      // pause / resume with notifications; pause twice is idempotent
      assert.equal((await rpc.request<VmInfo>("vm.pause", { name: vm })).state, "paused");
      await rpc.waitNotification(stateChange(vm, "paused"), 10_000, "vm.stateChanged paused");
      assert.equal((await rpc.request<VmInfo>("vm.pause", { name: vm })).state, "paused");
      assert.equal((await rpc.request<VmInfo>("vm.resume", { name: vm })).state, "running");

      // snapshots
      const snap = await rpc.request<SnapshotInfo>("vm.snapshot.take", { name: vm, snapshot: "s1" });
      assert.equal(snap.name, "s1");
      assert.ok(snap.createdAt > 0);
      assert.equal(errorOf(await rpc.call("vm.snapshot.take", { name: vm, snapshot: "s1" })).code, VmcErrorCodes.AlreadyExists);
      assert.deepEqual((await rpc.request<SnapshotInfo[]>("vm.snapshot.list", { name: vm })).map((s) => s.name), ["s1"]);
      assert.equal(errorOf(await rpc.call("vm.snapshot.restore", { name: vm, snapshot: "nope" })).code, VmcErrorCodes.UnknownSnapshot);
      assert.equal(errorOf(await rpc.call("vm.snapshot.take", { name: vm, snapshot: "bad/name" })).code, RpcErrorCodes.InvalidParams);
      const restored = await rpc.request<VmInfo>("vm.snapshot.restore", { name: vm, snapshot: "s1" }, 60_000);
      assert.equal(restored.name, vm);
      assert.equal(await rpc.request("vm.snapshot.delete", { name: vm, snapshot: "s1" }), null);
      assert.deepEqual(await rpc.request<SnapshotInfo[]>("vm.snapshot.list", { name: vm }), []);

      // commands: list/get of unknown, cmd.run through the command history
      assert.equal(errorOf(await rpc.call("cmd.get", { id: "no-such-command" })).code, VmcErrorCodes.UnknownCommand);
      assert.equal(errorOf(await rpc.call("cmd.run", { target: vm, argv: [] })).code, RpcErrorCodes.InvalidParams);

      // delete a running VM needs force; stop; delete
      const running = errorOf(await rpc.call("vm.delete", { name: vm }));
      assert.equal(running.code, VmcErrorCodes.InvalidState);
      const stopped = await rpc.request<VmInfo>("vm.stop", { name: vm, timeoutMs: 5000 }, 30_000);
      assert.equal(stopped.state, "stopped");
      await rpc.waitNotification(stateChange(vm, "stopped"), 10_000, "vm.stateChanged stopped");
      assert.equal(await rpc.request("vm.delete", { name: vm }), null);
      await rpc.waitNotification((n) => n.method === "vm.stateChanged" && (n.params as VmStateChange).name === vm && (n.params as VmStateChange).cause === "deleted", 10_000, "vm.stateChanged deleted");
      assert.deepEqual(await rpc.request("vm.list"), []);
      assert.equal(existsSync(join(home.path, "vms", vm)), false);
    });
  }

  it("rpc-ndjson: a command's timeout counts only the time its VM ran (vm.pause for longer than timeout + the controller's 10 s result grace)", async (t) => {
    const home = tempDir("vmc-rpc-pause-");
    homes.push(home);
    const rpc = await startEndpoint("rpc-ndjson", { home: home.path, broker: broker.url });
    endpoints.push(rpc);
    await rpc.request("vm.create", { name: "s1", driver: "process" });
    await rpc.request("vm.start", { name: "s1", waitForAgent: true }, 40_000);
    const sent = await rpc.request<CommandRecord>("cmd.run", { target: "s1", argv: ["sh", "-c", "echo go; sleep 1; echo end"], timeoutMs: 3000 });
    await rpc.waitNotification((n) => n.method === "cmd.output" && (n.params as { id: string }).id === sent.id, 20_000, "the command's first output");
    const pausedAt = Date.now();
    assert.equal((await rpc.request<VmInfo>("vm.pause", { name: "s1" })).state, "paused");
    await sleep(14_000); // the BOINC suspend being simulated, not a wait for an event
    assert.equal((await rpc.request<VmInfo>("vm.resume", { name: "s1" })).state, "running");
    const done = (await rpc.waitNotification((n) => n.method === "cmd.finished" && (n.params as CommandRecord).id === sent.id, 30_000, "cmd.finished")).params as CommandRecord;
    t.diagnostic(`finished ${done.finishedAt! - pausedAt} ms after the pause: ${JSON.stringify({ ...done.targets[0], stdout: undefined })}`);
    assert.equal(done.targets[0]!.status, "succeeded", `${done.targets[0]!.status}: ${done.targets[0]!.reason ?? ""}`);
    assert.equal(Buffer.from(done.targets[0]!.stdout.data, "base64").toString(), "go\nend\n");
    assert.ok(done.finishedAt! - sent.submittedAt > 14_000, "it outlived timeout + grace in wall-clock time");

    const over = await rpc.request<CommandRecord>("cmd.run", { target: "s1", argv: ["sh", "-c", "sleep 5"], timeoutMs: 1000, wait: true }, 30_000);
    assert.equal(over.targets[0]!.status, "timedOut", "without a pause the timeout holds");
    await rpc.request("vm.delete", { name: "s1", force: true });
  });

  for (const kind of ENDPOINTS) it(`${kind}: cmd.run / input / get / list / cancel, $/cancelRequest on cmd.run and file.put, fs.*`, async () => {
    const home = tempDir(`vmc-rpc-cmd-${kind}-`);
    homes.push(home);
    const rpc = await startEndpoint(kind, { home: home.path, broker: broker.url });
    endpoints.push(rpc);
    await rpc.request("vm.create", { name: "c1", driver: "process" });
    await rpc.request("vm.start", { name: "c1", waitForAgent: true }, 40_000);

    const done = await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["sh", "-c", "echo out; echo err >&2; exit 3"], wait: true }, 30_000);
    assert.equal(done.state, "finished");
    assert.equal(done.targets[0]!.status, "failed", JSON.stringify(done.targets[0]));
    assert.equal(done.targets[0]!.exitCode, 3, JSON.stringify(done.targets[0]));
    assert.equal(Buffer.from(done.targets[0]!.stdout.data, "base64").toString(), "out\n");
    assert.equal(Buffer.from(done.targets[0]!.stderr.data, "base64").toString(), "err\n");
    assert.deepEqual(await rpc.request<CommandRecord>("cmd.get", { id: done.id }), done, "cmd.get returns the same record, as often as asked");
    assert.deepEqual(await rpc.request<CommandRecord>("cmd.get", { id: done.id }), done);

    const bg = await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["sh", "-c", "echo started; sleep 0.3; echo later"] });
    assert.equal(bg.state, "running");
    const finished = await rpc.waitNotification((n) => n.method === "cmd.finished" && (n.params as CommandRecord).id === bg.id, 30_000, "cmd.finished");
    assert.equal((finished.params as CommandRecord).ok, true);
    await rpc.waitNotification((n) => n.method === "cmd.output" && (n.params as { id: string }).id === bg.id, 5000, "cmd.output");
    const list = await rpc.request<Array<{ id: string }>>("cmd.list", {});
    assert.deepEqual(new Set(list.map((c) => c.id)), new Set([done.id, bg.id]));

    // $/cancelRequest on a waiting cmd.run ends the command
    const id = rpc.nextRequestId();
    const waiting = rpc.response(id, 30_000, "cancelled cmd.run");
    await rpc.writeRaw(rpc.frame({ jsonrpc: "2.0", id, method: "cmd.run", params: { target: "c1", argv: ["sleep", "60"], wait: true } }));
    await rpc.waitNotification((n) => n.method === "cmd.started", 10_000, "cmd.started");
    const t0 = Date.now();
    await rpc.notify("$/cancelRequest", { id });
    const cancelled = await waiting;
    assert.equal(errorOf(cancelled).code, RpcErrorCodes.RequestCancelled);
    assert.ok(Date.now() - t0 < 10_000);
    const record = (errorOf(cancelled).data as { result: CommandRecord }).result;
    assert.equal(record.targets[0]!.status, "cancelled");

    // cmd.cancel of a running command
    const long = await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["sleep", "60"] });
    const ended = await rpc.request<CommandRecord>("cmd.cancel", { id: long.id }, 20_000);
    assert.equal(ended.targets[0]!.status, "cancelled");

    // a restore rolls back what was sent after the snapshot: cmd.finished with status rolledBack
    await rpc.request("vm.snapshot.take", { name: "c1", snapshot: "before" });
    const doomed = await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["sleep", "60"] });
    await rpc.waitNotification((n) => n.method === "cmd.started" && (n.params as CommandRecord).id === doomed.id, 10_000, "cmd.started (doomed)");
    await rpc.request("vm.snapshot.restore", { name: "c1", snapshot: "before" }, 60_000);
    const rolled = (await rpc.waitNotification((n) => n.method === "cmd.finished" && (n.params as CommandRecord).id === doomed.id, 30_000, "cmd.finished rolledBack")).params as CommandRecord;
    assert.equal(rolled.targets[0]!.status, "rolledBack", JSON.stringify(rolled.targets[0]));
    assert.match(rolled.targets[0]!.reason ?? "", /^rolled back by restore of snapshot before of VM c1$/);
    assert.equal((await rpc.request<CommandRecord>("cmd.get", { id: doomed.id })).targets[0]!.status, "rolledBack", "the history has it too");
    await rpc.request("vm.start", { name: "c1", waitForAgent: true }, 40_000);

    // interactive stdin
    const cat = await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["cat"], interactive: true });
    assert.equal(await rpc.request("cmd.input", { id: cat.id, data: Buffer.from("typed in\n").toString("base64"), eof: true }), null);
    const catDone = (await rpc.waitNotification((n) => n.method === "cmd.finished" && (n.params as CommandRecord).id === cat.id, 30_000, "cat finished")).params as CommandRecord;
    assert.equal(Buffer.from(catDone.targets[0]!.stdout.data, "base64").toString(), "typed in\n");
    assert.equal(errorOf(await rpc.call("cmd.input", { id: cat.id, data: "not base64!" })).code, RpcErrorCodes.InvalidParams);

    // the guest file system (fs.*)
    const guestHome = Buffer.from((await rpc.request<CommandRecord>("cmd.run", { target: "c1", argv: ["sh", "-c", "printf %s \"$HOME\""], wait: true })).targets[0]!.stdout.data, "base64").toString();
    const f = `${guestHome}/notes.txt`;
    assert.equal(await rpc.request("fs.writeFile", { target: "c1", path: f, data: Buffer.from("fs works").toString("base64"), create: true, overwrite: true }), null);
    assert.equal((await rpc.request<{ size: number; type: string }>("fs.stat", { target: "c1", path: f })).size, 8);
    assert.equal(Buffer.from((await rpc.request<{ data: string }>("fs.readFile", { target: "c1", path: f })).data, "base64").toString(), "fs works");
    assert.equal(await rpc.request("fs.mkdir", { target: "c1", path: `${guestHome}/d` }), null);
    assert.equal(await rpc.request("fs.rename", { target: "c1", from: f, to: `${guestHome}/d/moved.txt` }), null);
    assert.deepEqual(await rpc.request("fs.readDir", { target: "c1", path: `${guestHome}/d` }), [{ name: "moved.txt", type: "file" }]);
    assert.equal(await rpc.request("fs.delete", { target: "c1", path: `${guestHome}/d`, recursive: true }), null);
    assert.equal(errorOf(await rpc.call("fs.stat", { target: "c1", path: `${guestHome}/d` })).code, VmcErrorCodes.UnknownPath);
    assert.equal(errorOf(await rpc.call("fs.stat", { target: "c1", path: "relative/path" })).code, RpcErrorCodes.InvalidParams);

    // $/cancelRequest on a running file.put: -32800, and no file left behind
    const big = tempDir("vmc-rpc-big-");
    homes.push(big);
    const bigFile = join(big.path, "big.bin");
    writeFileSync(bigFile, Buffer.alloc(96 * 1024 * 1024, 0x5a)); // not sparse: a sparse file moves in no time
    const putId = rpc.nextRequestId();
    const putAnswer = rpc.response(putId, 60_000, "cancelled file.put");
    await rpc.writeRaw(rpc.frame({ jsonrpc: "2.0", id: putId, method: "file.put", params: { sources: [bigFile], destination: { target: "c1", path: `${guestHome}/big.bin` }, workDoneToken: "big" } }));
    await rpc.waitNotification((n) => n.method === "$/progress" && (n.params as { token: string }).token === "big", 30_000, "file.put progress");
    await rpc.notify("$/cancelRequest", { id: putId });
    assert.equal(errorOf(await putAnswer).code, RpcErrorCodes.RequestCancelled);
    assert.equal(errorOf(await rpc.call("fs.stat", { target: "c1", path: `${guestHome}/big.bin` })).code, VmcErrorCodes.UnknownPath, "a cancelled put leaves no file");

    await rpc.request("vm.delete", { name: "c1", force: true });
  });
});
