import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { it, type TestContext } from "node:test";
import { Destinations } from "@vmc/protocol/bus";
import { eventually, forEachBroker, type BrokerRef } from "./brokers";
import { startFreezableProxy } from "../bus-client/freezable-proxy";
import { spawnAgent, tempDir, TestController, unb64 } from "./fixture";

async function ready(t: TestContext, brokers: BrokerRef) {
  const broker = brokers.need(t);
  if (!broker) return undefined;
  const controller = await TestController.create(t, broker.url);
  const id = `test.${randomUUID().slice(0, 8)}`;
  const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey });
  const hello = await controller.hello(id);
  return { broker, controller, id, agent, hello };
}

const lines = (path: string): string[] => {
  try {
    return readFileSync(path, "utf8").split("\n").filter(Boolean);
  } catch {
    return [];
  }
};

forEachBroker("agent runs each command exactly once, across restarts and dead links", (brokers) => {
  it("answers a redelivered CMD_RUN with the recorded result instead of running it again", async (t) => {
    const r = await ready(t, brokers);
    if (!r) return;
    const marker = `${tempDir(t, "vmc-once-")}/runs`;
    const cmd = r.controller.run(r.id, { argv: ["sh", "-c", `echo run >> ${marker}; echo hello`] });
    await r.controller.send(r.id, cmd);
    const first = await r.controller.result(cmd.cmdId);
    await r.controller.send(r.id, cmd);
    const second = await r.controller.result(cmd.cmdId, 2);
    assert.equal(first.replayed, false);
    assert.equal(second.replayed, true);
    assert.equal(second.status, "exited");
    assert.equal(unb64(second.stdout.data), "hello\n");
    assert.equal(second.finishedAt, first.finishedAt);
    assert.deepEqual(lines(marker), ["run"]);
  });

  it("does not start a command twice while it runs, and survives an agent restart", async (t) => {
    const r = await ready(t, brokers);
    if (!r) return;
    const marker = `${tempDir(t, "vmc-once-")}/runs`;
    const cmd = r.controller.run(r.id, { argv: ["sh", "-c", `echo run >> ${marker}; echo started; sleep 1`] });
    await r.controller.send(r.id, cmd);
    await r.controller.send(r.id, cmd);
    const result = await r.controller.result(cmd.cmdId);
    assert.equal(result.status, "exited");
    assert.deepEqual(lines(marker), ["run"]);
    // After a restart the journal still knows it.
    await r.agent.restart();
    await r.controller.hello(r.id, r.hello.bootId);
    await r.controller.send(r.id, cmd);
    // The restarted agent may also re-send the original result if the broker's receipt for it had not arrived before the kill.
    const replay = await eventually("a replayed result", () => r.controller.results.get(cmd.cmdId)?.find((x) => x.replayed), 30_000);
    assert.equal(replay.status, "exited");
    assert.deepEqual(lines(marker), ["run"]);
  });

  it("reports a command as lost when the agent was killed while it ran, and never reruns it", async (t) => {
    const r = await ready(t, brokers);
    if (!r) return;
    const marker = `${tempDir(t, "vmc-once-")}/runs`;
    const cmd = r.controller.run(r.id, { argv: ["sh", "-c", `echo run >> ${marker}; echo started; sleep 20`] });
    await r.controller.send(r.id, cmd);
    await eventually("the command's first output", () => (r.controller.stream(cmd.cmdId, "stdout").bytes > 0 ? true : undefined));
    await r.agent.kill("SIGKILL");
    await r.agent.restart();
    const lost = await r.controller.result(cmd.cmdId, 1, 20_000);
    assert.equal(lost.status, "lost");
    assert.match(lost.error ?? "", /not run again/);
    await r.controller.send(r.id, cmd);
    const replay = await eventually("a replayed result", () => r.controller.results.get(cmd.cmdId)?.find((x) => x.replayed), 30_000);
    assert.equal(replay.status, "lost");
    assert.deepEqual(lines(marker), ["run"]);
  });

  it("runs a command sent while the agent was away once it comes back", async (t) => {
    const r = await ready(t, brokers);
    if (!r) return;
    await r.agent.kill("SIGTERM");
    await eventually("BYE", () => r.controller.presence.find((p) => p.type === "BYE" && p.agentId === r.id));
    const cmd = r.controller.run(r.id, { argv: ["echo", "queued"] });
    await r.controller.send(r.id, cmd);
    await r.agent.restart();
    const result = await r.controller.result(cmd.cmdId, 1, 20_000);
    assert.equal(unb64(result.stdout.data), "queued\n");
  });

  it("answers DISCOVER with HELLO at once", async (t) => {
    const r = await ready(t, brokers);
    if (!r) return;
    const before = r.controller.hellos.length;
    await r.controller.bus.publishJson(Destinations.discover, { type: "DISCOVER", controllerId: "test" }, { receipt: true });
    const again = await eventually("a second HELLO", () => r.controller.hellos.slice(before).find((h) => h.agentId === r.id), 5_000);
    assert.equal(again.bootId, r.hello.bootId);
  });
  it("notices a broker link that went silent, reconnects at once and announces itself again", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const proxy = await startFreezableProxy(broker.host, broker.port);
    t.after(() => proxy.close());
    const id = `test.${randomUUID().slice(0, 8)}`;
    await spawnAgent(t, { brokerUrl: proxy.url, id, publicKey: controller.keys.publicKey });
    const hello = await controller.hello(id);
    const before = controller.hellos.length;
    const frozenAt = performance.now();
    proxy.freeze();
    await eventually("a new HELLO after the freeze", () => controller.hellos.slice(before).find((h) => h.agentId === id), 15_000);
    const elapsed = performance.now() - frozenAt;
    t.diagnostic(`re-announced ${Math.round(elapsed)} ms after the link went silent`);
    assert.ok(elapsed < 6_000, `took ${Math.round(elapsed)} ms`);
    assert.ok(proxy.accepted >= 2);
    const cmd = controller.run(id, { argv: ["echo", "after"] });
    await controller.send(id, cmd);
    assert.equal(unb64((await controller.result(cmd.cmdId)).stdout.data), "after\n");
    assert.equal(controller.hellos.at(-1)?.bootId, hello.bootId, "same agent process, not a restart");
  });
  it("delivers every byte of output, in order, across a link that died mid-stream", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const proxy = await startFreezableProxy(broker.host, broker.port);
    t.after(() => proxy.close());
    const id = `test.${randomUUID().slice(0, 8)}`;
    await spawnAgent(t, { brokerUrl: proxy.url, id, publicKey: controller.keys.publicKey });
    await controller.hello(id);
    // 250 paced batches of 10,000 eight-byte lines: 20 MB over several seconds, every byte checkable.
    const batches = 250;
    const script = `i=0; while [ $i -lt ${batches} ]; do s=$((1000000 + i * 10000)); seq $s $((s + 9999)); sleep 0.02; i=$((i + 1)); done`;
    const parts: string[] = [];
    for (let n = 1_000_000; n < 1_000_000 + batches * 10_000; n++) parts.push(`${n}\n`);
    const expected = Buffer.from(parts.join(""));
    const cmd = controller.run(id, { argv: [script], shell: true, tailBytes: 1024 });
    controller.keepAll.add(cmd.cmdId);
    await controller.send(id, cmd);
    await eventually("2 MB of output", () => (controller.stream(cmd.cmdId, "stdout").bytes >= 2_000_000 ? true : undefined), 60_000);
    // Frames written from now on vanish with the socket, as on a link that stalled and was given up.
    proxy.freeze();
    const atFreeze = controller.stream(cmd.cmdId, "stdout").bytes;
    const result = await controller.result(cmd.cmdId, 1, 120_000);
    const stdout = controller.stream(cmd.cmdId, "stdout");
    t.diagnostic(`froze at ${atFreeze} bytes; ${proxy.accepted} connections; ${stdout.duplicateBytes} bytes arrived twice, ${stdout.gapBytes} never`);
    assert.equal(result.status, "exited");
    assert.equal(result.stdout.totalBytes, expected.length);
    assert.ok(atFreeze < expected.length, "the link died mid-stream");
    assert.ok(proxy.accepted >= 2, "the agent reconnected");
    assert.equal(stdout.bytes, expected.length, "all output arrived before the result");
    assert.ok(stdout.contiguous, "no chunk started beyond the bytes received so far");
    assert.ok(Buffer.concat(stdout.chunks ?? []).equals(expected), "the bytes, by offset, are the command's output");
  });
});
