import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { it } from "node:test";
import { startFreezableProxy } from "../bus-client/freezable-proxy";
import { eventually, forEachBroker } from "./brokers";
import { spawnAgent, TestController, unb64 } from "./fixture";

forEachBroker("agent after a silent link death (snapshot restore)", (brokers) => {
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
});
