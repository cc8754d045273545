import { test } from "node:test";
import assert from "node:assert/strict";
import { AgentId, CmdRun, canonicalJson, signedPayload } from "@vmc/protocol";

test("canonical JSON sorts keys at every depth and drops undefined", () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[1,{"y":2,"z":1}]},"b":1}');
});

test("the signed payload leaves out the signature only", () => {
  assert.equal(signedPayload({ signature: "x", cmdId: "c", argv: ["a"] }), '{"argv":["a"],"cmdId":"c"}');
});

test("agent ids are dotted words; anything else is refused with a reason", () => {
  assert.ok(AgentId.safeParse("vm.1.2.7").success);
  for (const bad of ["", "vm..1", ".vm", "vm/1", "vm 1", "a".repeat(129)]) assert.equal(AgentId.safeParse(bad).success, false, bad);
});

test("CMD_RUN fills defaults and rejects an empty argv", () => {
  const base = {
    type: "CMD_RUN", cmdId: "cmd-00000001", agentId: "vm.1", to: "vm.*", argv: ["true"],
    issuedAt: 1, expiresAt: 2, replyTo: "/queue/vmc.controller.x", signature: "s",
  };
  const parsed = CmdRun.parse(base);
  assert.equal(parsed.shell, false);
  assert.deepEqual(parsed.env, {});
  assert.equal(CmdRun.safeParse({ ...base, argv: [] }).success, false);
});

test("a signed message verifies; any change to it, or another key, does not", async () => {
  const { generateControllerKeyPair, privateKeyFromPem, publicKeyFromBase64, signMessage, verifyMessage } = await import("@vmc/protocol/signing");
  const pair = generateControllerKeyPair();
  assert.equal(pair.publicKey.length, 44);
  const signed = signMessage({ cmdId: "cmd-1", argv: ["true"], expiresAt: 5 }, privateKeyFromPem(pair.privateKeyPem));
  const key = publicKeyFromBase64(pair.publicKey);
  assert.ok(verifyMessage(signed, key));
  assert.equal(verifyMessage({ ...signed, argv: ["rm", "-rf", "/"] }, key), false);
  assert.equal(verifyMessage({ ...signed, signature: "AAAA" }, key), false);
  assert.equal(verifyMessage(signed, publicKeyFromBase64(generateControllerKeyPair().publicKey)), false);
});
