import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { it } from "node:test";
import { Destinations } from "@vmc/protocol/bus";
import { generateControllerKeyPair, privateKeyFromPem } from "@vmc/protocol/signing";
import { forEachBroker } from "./brokers";
import { startAgent } from "@vmc/agent/agent";
import { spawnAgent, tempDir, TestController, unb64 } from "./fixture";

forEachBroker("agent refuses what it must not run", (brokers) => {
  it("refuses forged, unsigned, tampered, expired and wrong-agent commands with reasons", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey });
    await controller.hello(id);

    const otherKey = privateKeyFromPem(generateControllerKeyPair().privateKeyPem);
    const forged = controller.run(id, { argv: ["echo", "forged"] }, otherKey);
    const { signature: _s, ...unsignedBody } = controller.run(id, { argv: ["echo", "unsigned"] });
    const unsigned = { ...unsignedBody, signature: "" };
    const tampered = { ...controller.run(id, { argv: ["echo", "ok"] }), argv: ["echo", "tampered"] };
    const expired = controller.run(id, { argv: ["echo", "expired"], issuedAt: Date.now() - 120_000, expiresAt: Date.now() - 60_000 });
    const wrongAgent = controller.run(`${id}.other`, { argv: ["echo", "wrong"] });
    for (const m of [forged, unsigned, tampered, expired, wrongAgent]) await controller.send(id, m);

    const reasons: Record<string, RegExp> = {
      [forged.cmdId]: /signature/,
      [unsigned.cmdId as string]: /signature/,
      [tampered.cmdId]: /signature/,
      [expired.cmdId]: /expired/,
      [wrongAgent.cmdId]: /addressed to agent/,
    };
    for (const [cmdId, reason] of Object.entries(reasons)) {
      const result = await controller.result(cmdId);
      assert.equal(result.status, "rejected", cmdId);
      assert.match(result.error ?? "", reason);
      assert.equal(result.stdout.totalBytes, 0);
    }
    // A forged message does not reserve its cmd-id: the genuine command with that id still runs.
    const genuine = controller.run(id, { argv: ["echo", "genuine"], cmdId: forged.cmdId });
    await controller.send(id, genuine);
    const ok = await controller.result(forged.cmdId, 2);
    assert.equal(ok.status, "exited");
    assert.equal(unb64(ok.stdout.data), "genuine\n");
    assert.ok(agent.pid > 0);
  });

  it("survives garbage in its inbox and keeps working", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey });
    await controller.hello(id);
    const inbox = Destinations.agentInbox(id);
    const junk: Array<string | Uint8Array> = [
      "not json at all",
      "null",
      "[1,2,3]",
      JSON.stringify({ type: 42 }),
      JSON.stringify({ type: "CMD_RUN" }),
      JSON.stringify({ type: "CMD_RUN", cmdId: "x".repeat(1000), argv: "ls", replyTo: controller.replyTo }),
      JSON.stringify({ type: "CMD_INPUT", cmdId: "nothing-here", agentId: id, seq: 0, data: "AA==", issuedAt: 1, signature: "x" }),
      JSON.stringify({ type: "CMD_CANCEL", cmdId: "nothing-here", agentId: id, issuedAt: 1, signature: "x" }),
      JSON.stringify({ type: "SOMETHING_ELSE", a: 1 }),
      JSON.stringify({ type: "CMD_RUN", replyTo: "\n/evil", cmdId: "abcdefgh1", agentId: id }),
      `{"deep":${"[".repeat(200_000)}${"]".repeat(200_000)}}`,
      `{"type":"CMD_RUN","cmdId":"deep-nesting-1","env":${"[".repeat(200_000)}${"]".repeat(200_000)}}`,
      new Uint8Array([0, 255, 1, 2, 3, 0, 0]),
      "x".repeat(3 * 1024 * 1024),
    ];
    for (const body of junk) await controller.bus.publish(inbox, body, { receipt: true, headers: { persistent: "true" } });
    // The schema-invalid CMD_RUN with a usable cmdId and replyTo is answered as rejected.
    const invalid = controller.run(id, { argv: ["echo"] });
    await controller.send(id, { ...invalid, argv: "echo not-an-array" });
    const refused = await controller.result(invalid.cmdId);
    assert.equal(refused.status, "rejected");
    assert.match(refused.error ?? "", /invalid CMD_RUN: argv/);
    const cmd = controller.run(id, { argv: ["echo", "still here"] });
    await controller.send(id, cmd);
    const result = await controller.result(cmd.cmdId);
    assert.equal(unb64(result.stdout.data), "still here\n");
    assert.doesNotMatch(agent.stderr(), /TypeError|RangeError|Uncaught|at .*agent/);
  });
});

forEachBroker("agent after a snapshot restore", (brokers) => {
  it("refuses a command issued before the restore that its rolled-back journal cannot know; runs later ones", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await startAgent({ id, brokerUrl: broker.url, controllerKey: controller.keys.publicKey, stateDir: tempDir(t, "restored"), log: () => undefined });
    t.after(() => agent.stop());
    await controller.hello(id);

    const before = controller.run(id, { argv: ["echo", "from the discarded timeline"] });
    const issuedAt = Number(before.issuedAt);
    agent.restored(issuedAt + 1); // the inbox keeps what arrives while it reconnects
    await controller.send(id, before);
    const refused = await controller.result(before.cmdId);
    assert.equal(refused.status, "rejected");
    assert.match(refused.error ?? "", /rolled back/);
    assert.equal(refused.stdout.totalBytes, 0, "it did not run");

    const after = controller.run(id, { argv: ["echo", "after"], issuedAt: issuedAt + 2 });
    await controller.send(id, after);
    const ran = await controller.result(after.cmdId);
    assert.equal(ran.status, "exited");
    assert.equal(unb64(ran.stdout.data), "after\n");
  });
});
