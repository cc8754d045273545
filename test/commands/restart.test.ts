/**
 * The history survives its controller: kill -9 between cmd.run and cmd.get loses nothing, and
 * two controller processes share one store without corrupting it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { CommandRecord, CommandSummary } from "@vmc/protocol/rpc";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { makeHome, PresenceWatcher, startAgentProcess, type AgentProcess, type TestHome } from "../exec/helpers";
import { ControllerProcess, text } from "./helpers";

describe("command history across controller processes", { timeout: 180_000 }, () => {
  let broker: EmbeddedBroker;
  let home: TestHome;
  let agent: AgentProcess;
  let presence: PresenceWatcher;
  const controllers: ControllerProcess[] = [];
  const start = async (lease = true) => {
    const c = await ControllerProcess.start(home.dir, broker.url, { lease });
    controllers.push(c);
    assert.equal(await c.request("waitAgent", { agentId: "a1" }), true, "the agent is online for the controller");
    return c;
  };

  before(async () => {
    broker = await startEmbeddedBroker({ port: await freePort() });
    home = makeHome();
    agent = startAgentProcess({ id: "a1" }, broker.url, home);
    presence = await PresenceWatcher.open(broker.url);
    await presence.waitFor(["a1"], 30_000);
  });
  after(async () => {
    for (const c of controllers) await c.kill();
    await agent?.kill();
    await presence?.bus.close();
    await broker?.stop();
    home?.remove();
  });

  it("kill -9 of the controller between cmd.run and cmd.get loses nothing", async () => {
    const a = await start();
    const sent = await a.request<CommandRecord>("run", { target: "a1", argv: ["sleep 2; echo done"], shell: true });
    assert.equal(sent.state, "running");
    const onDisk = JSON.parse(readFileSync(join(home.dir, "commands", `${sent.id}.json`), "utf8")) as { owner: string; record: CommandRecord };
    assert.equal(onDisk.record.state, "running", "the record is on disk before cmd.run answers");
    assert.equal(onDisk.owner, a.ready.instanceId);
    await a.kill();

    const b = await start();
    assert.equal(b.ready.instanceId, a.ready.instanceId, "the restarted controller takes over the dead one's identity");
    const finished = await b.finished(sent.id, 30_000);
    assert.equal(finished.state, "finished");
    assert.equal(finished.targets[0]?.status, "succeeded", JSON.stringify(finished.targets[0]));
    assert.equal(text(finished.targets[0]!.stdout.data), "done\n");
    const got = await b.request<CommandRecord>("get", { id: sent.id });
    const again = await b.request<CommandRecord>("get", { id: sent.id });
    assert.deepEqual(again, got, "reading a result does not consume it");
    assert.equal(text(got.targets[0]!.stdout.data), "done\n");
    assert.equal(got.targets[0]!.exitCode, 0);
    await b.exit();

    const c = await start(false);
    const later = await c.request<CommandRecord>("get", { id: sent.id });
    assert.equal(text(later.targets[0]!.stdout.data), "done\n", "a third controller still reads it from the store");
    await c.exit();
  });

  it("two controllers running commands at once keep complete, uncorrupted histories", async () => {
    const [x, y] = await Promise.all([start(), start()]);
    assert.notEqual(x.ready.instanceId, y.ready.instanceId, "two live controllers never share an identity");
    const N = 15;
    const runAll = (c: ControllerProcess, tag: string) =>
      Promise.all(Array.from({ length: N }, (_, i) => c.request<CommandRecord>("run", { target: "a1", argv: ["printf", `${tag}-${i}`] })));
    const [xs, ys] = await Promise.all([runAll(x, "x"), runAll(y, "y")]);
    const check = async (c: ControllerProcess, sent: CommandRecord[], tag: string) => {
      for (const [i, r] of sent.entries()) {
        const done = await c.finished(r.id, 60_000);
        assert.equal(done.targets[0]?.status, "succeeded");
        assert.equal(text(done.targets[0]!.stdout.data), `${tag}-${i}`);
      }
    };
    await Promise.all([check(x, xs, "x"), check(y, ys, "y")]);
    const listed = await x.request<CommandSummary[]>("list", { state: "finished" });
    const ids = new Set(listed.map((s) => s.id));
    for (const r of [...xs, ...ys]) assert.ok(ids.has(r.id), `controller x lists ${r.id} (sent by ${xs.includes(r) ? "x" : "y"}); it listed ${listed.length}: ${[...ids].join(" ")}; on disk: ${readdirSync(join(home.dir, "commands")).join(" ")}`);
    for (const r of ys) {
      const seen = await x.request<CommandRecord>("get", { id: r.id });
      assert.equal(seen.state, "finished", "one controller reads the other's finished results");
    }
    const files = readdirSync(join(home.dir, "commands"));
    assert.equal(files.filter((f) => f.endsWith(".tmp")).length, 0, "no half-written files left");
    for (const f of files) JSON.parse(readFileSync(join(home.dir, "commands", f), "utf8"));
    await Promise.all([x.exit(), y.exit()]);
  });
});
