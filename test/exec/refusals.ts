/**
 * Hand-made CMD_RUN messages put straight into a real agent's inbox: unsigned, forged,
 * tampered with, meant for another agent, expired, and replayed. The agent must refuse all but
 * the first copy of the good one, and say so in a CMD_RESULT.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { CmdResult, ControllerInboxMessage, Destinations, type CmdRunInput } from "@vmc/protocol/bus";
import { generateControllerKeyPair, privateKeyFromPem, signMessage } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import type { TestHome } from "./helpers";

export async function checkRefusals(brokerUrl: string, home: TestHome, agentId: string, t: TestContext): Promise<void> {
  const bus = new BusClient({ brokerUrl, name: "test-refusals", log: () => {} });
  t.after(() => bus.close());
  await bus.connect(15_000);
  const replyTo = Destinations.controllerReplies(`test${randomBytes(6).toString("hex")}`);
  const waiting = new Map<string, (r: CmdResult) => void>();
  const results: CmdResult[] = [];
  const sub = bus.subscribeJson(replyTo, ControllerInboxMessage, (m) => {
    if (m.type !== "CMD_RESULT") return;
    results.push(m);
    waiting.get(m.cmdId)?.(m);
  });
  await sub.ready;

  const marker = join(home.dir, `replay-${randomBytes(4).toString("hex")}`);
  const base = (over: Partial<CmdRunInput> = {}): Omit<CmdRunInput, "signature"> => {
    const now = Date.now();
    return {
      type: "CMD_RUN",
      cmdId: `c-test-${randomBytes(8).toString("hex")}`,
      agentId,
      to: agentId,
      argv: ["sh", "-c", `echo ran >> ${marker}`],
      issuedAt: now,
      expiresAt: now + 30_000,
      replyTo,
      ...over,
    };
  };
  const send = (message: object) => bus.publishJson(Destinations.agentInbox(agentId), message, { headers: { persistent: "true" } });
  const resultOf = (cmdId: string, timeoutMs = 20_000) =>
    new Promise<CmdResult>((resolve, reject) => {
      const early = results.filter((r) => r.cmdId === cmdId);
      const timer = setTimeout(() => reject(new Error(`no CMD_RESULT for ${cmdId} within ${timeoutMs} ms`)), timeoutMs);
      const done = (r: CmdResult) => {
        clearTimeout(timer);
        waiting.delete(cmdId);
        resolve(r);
      };
      if (early.length) return done(early[early.length - 1]!);
      waiting.set(cmdId, done);
    });
  const ours = home.keys.privateKey;
  const stranger = privateKeyFromPem(generateControllerKeyPair().privateKeyPem);

  const cases: Array<[string, object, RegExp]> = [];
  const unsigned = base();
  cases.push(["unsigned", { ...unsigned, signature: "" }, /sign/i]);
  const forged = base();
  cases.push(["signed by another key", signMessage(forged, stranger), /sign/i]);
  const tampered = signMessage(base(), ours);
  cases.push(["altered after signing", { ...tampered, argv: ["sh", "-c", `echo evil >> ${marker}`] }, /sign/i]);
  const expired = base({ issuedAt: Date.now() - 60_000, expiresAt: Date.now() - 30_000 });
  cases.push(["expired", signMessage(expired, ours), /expir/i]);
  const elsewhere = signMessage(base({ agentId: "vm.somebody.else", to: "vm.somebody.else" }), ours);
  cases.push(["meant for another agent", elsewhere, /agent|another|not for/i]);

  for (const [name, message, why] of cases) {
    const cmdId = (message as { cmdId: string }).cmdId;
    await send(message);
    const r = await resultOf(cmdId);
    assert.equal(r.status, "rejected", `${name}: ${JSON.stringify(r)}`);
    assert.match(r.error ?? "", why, `${name}: the reason is given`);
  }

  const good = signMessage(base(), ours);
  await send(good);
  const first = await resultOf(good.cmdId);
  assert.equal(first.status, "exited");
  assert.equal(first.exitCode, 0);
  assert.equal(first.replayed, false);
  results.length = 0;
  await send(good);
  const again = await resultOf(good.cmdId);
  assert.equal(again.replayed, true, `a replayed command is answered from the journal: ${JSON.stringify(again)}`);
  assert.equal(readFileSync(marker, "utf8"), "ran\n", "the command ran once, and none of the refused ones ran");
}
