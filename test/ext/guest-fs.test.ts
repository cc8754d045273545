/**
 * The `fs.*` methods behind the editor's `vmc:` file system, through `vmc serve --stdio` (the
 * process the extension starts) against the embedded broker, on a process-driver VM whose agent
 * is a real agent process: every operation, the flags that make them refuse, and the error codes
 * the extension maps onto the editor's file system errors.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { VmcErrorCodes } from "@vmc/protocol/errors";
import type { GuestFileStat, VmInfo } from "@vmc/protocol/rpc";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { errorOf, startEndpoint, tempDir, type RpcProcess } from "../rpc/harness";

describe("guest file system (fs.*) through vmc serve --stdio", () => {
  let broker: EmbeddedBroker;
  let rpc: RpcProcess;
  const home = tempDir("vmc-ext-fs-");
  const vm = "fsvm";
  const root = `/tmp/vmc-fs-${randomBytes(4).toString("hex")}`;

  before(async () => {
    broker = await startEmbeddedBroker();
    rpc = await startEndpoint("serve", { home: home.path, broker: broker.url });
    await rpc.request<VmInfo>("vm.create", { name: vm, driver: "process" });
    const started = await rpc.request<VmInfo>("vm.start", { name: vm, waitForAgent: true, agentTimeoutMs: 30_000 }, 40_000);
    assert.equal(started.agentOnline, true);
  });
  after(async () => {
    await rpc?.request("cmd.run", { target: vm, argv: ["rm", "-rf", root], wait: true }).catch(() => undefined);
    await rpc?.kill();
    const driver = new ProcessDriver(home.path);
    for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
    home.remove();
    await broker?.stop();
  });

  const code = async (method: string, params: unknown) => errorOf(await rpc.call(method, params, 30_000)).code;

  it("creates, lists, reads, writes, renames and deletes; refuses as asked", async () => {
    assert.equal(await code("fs.stat", { target: vm, path: root }), VmcErrorCodes.UnknownPath);
    assert.equal(await code("fs.mkdir", { target: vm, path: `${root}/a/b` }), VmcErrorCodes.UnknownPath, "parent missing");
    assert.equal(await rpc.request("fs.mkdir", { target: vm, path: root }), null);
    assert.equal(await code("fs.mkdir", { target: vm, path: root }), VmcErrorCodes.AlreadyExists);
    const dir = await rpc.request<GuestFileStat>("fs.stat", { target: vm, path: root });
    assert.equal(dir.type, "directory");

    // binary content with every byte value, and a name with spaces and a newline
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) % 256));
    const odd = `${root}/odd name\nwith newline.bin`;
    await rpc.request("fs.writeFile", { target: vm, path: odd, data: bytes.toString("base64"), create: true, overwrite: false });
    const read = await rpc.request<{ data: string; size: number }>("fs.readFile", { target: vm, path: odd });
    assert.equal(read.size, bytes.length);
    assert.ok(Buffer.from(read.data, "base64").equals(bytes), "content round-trips byte for byte");
    const st = await rpc.request<GuestFileStat>("fs.stat", { target: vm, path: odd });
    assert.equal(st.type, "file");
    assert.equal(st.size, bytes.length);
    assert.ok(Math.abs(st.mtime - Date.now()) < 120_000, `mtime in ms near now (${st.mtime})`);

    assert.equal(await code("fs.writeFile", { target: vm, path: odd, data: "", create: true, overwrite: false }), VmcErrorCodes.AlreadyExists);
    assert.equal(await code("fs.writeFile", { target: vm, path: `${root}/new.txt`, data: "", create: false, overwrite: true }), VmcErrorCodes.UnknownPath);
    assert.equal(await code("fs.readFile", { target: vm, path: odd, maxBytes: 1000 }), VmcErrorCodes.TooLarge);
    assert.equal(await code("fs.readFile", { target: vm, path: `${root}/none` }), VmcErrorCodes.UnknownPath);

    await rpc.request("fs.mkdir", { target: vm, path: `${root}/sub` });
    await rpc.request("fs.writeFile", { target: vm, path: `${root}/sub/.hidden`, data: Buffer.from("h\n").toString("base64") });
    await rpc.request("cmd.run", { target: vm, argv: [`ln -s sub ${root}/link`], shell: true, wait: true });
    const entries = await rpc.request<Array<{ name: string; type: string }>>("fs.readDir", { target: vm, path: root });
    assert.deepEqual(
      entries.map((e) => `${e.type}:${e.name}`).sort(),
      ["directory:sub", "file:odd name\nwith newline.bin", "symlink:link"].sort(),
    );
    assert.deepEqual(await rpc.request("fs.readDir", { target: vm, path: `${root}/sub` }), [{ name: ".hidden", type: "file" }], "dot files listed");
    assert.equal(await code("fs.readDir", { target: vm, path: odd }), VmcErrorCodes.UnknownPath, "not a directory");

    // rename: refuses to overwrite unless asked, never moves into a directory in the way
    await rpc.request("fs.writeFile", { target: vm, path: `${root}/x.txt`, data: Buffer.from("x").toString("base64") });
    assert.equal(await code("fs.rename", { target: vm, from: `${root}/x.txt`, to: `${root}/sub` }), VmcErrorCodes.AlreadyExists);
    await rpc.request("fs.rename", { target: vm, from: `${root}/x.txt`, to: `${root}/sub`, overwrite: true });
    const replaced = await rpc.request<GuestFileStat>("fs.stat", { target: vm, path: `${root}/sub` });
    assert.equal(replaced.type, "file", "the directory in the way was replaced, not moved into");
    assert.equal(await code("fs.stat", { target: vm, path: `${root}/x.txt` }), VmcErrorCodes.UnknownPath);

    // delete: a non-empty directory needs recursive
    await rpc.request("fs.mkdir", { target: vm, path: `${root}/full` });
    await rpc.request("fs.writeFile", { target: vm, path: `${root}/full/f`, data: "" });
    assert.notEqual(errorOf(await rpc.call("fs.delete", { target: vm, path: `${root}/full` })).code, 0);
    await rpc.request("fs.delete", { target: vm, path: `${root}/full`, recursive: true });
    assert.equal(await code("fs.stat", { target: vm, path: `${root}/full` }), VmcErrorCodes.UnknownPath);
    assert.equal(await code("fs.delete", { target: vm, path: `${root}/full` }), VmcErrorCodes.UnknownPath);
  });

  it("names an unreachable or unknown machine", async () => {
    const c = await code("fs.stat", { target: "no-such-machine", path: "/" });
    assert.ok(c === VmcErrorCodes.AgentUnreachable || c === VmcErrorCodes.UnknownVm, `code ${c}`);
  });
});
