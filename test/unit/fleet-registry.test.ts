import { test } from "node:test";
import assert from "node:assert/strict";
import { AgentRegistry, type AgentChange } from "@vmc/server/fleet/registry";

function hello(agentId: string, bootId = "b1", labels: Record<string, string> = {}) {
  return {
    type: "HELLO", agentId, labels, bootId, sentAt: 1, agentVersion: "0.1.0", protocolVersion: 1,
    os: { platform: "linux", release: "6", arch: "x64", hostname: "h" },
    capabilities: { exec: true, stdinStream: true, transfer: false },
  };
}

function setup() {
  let now = 1_000_000;
  const registry = new AgentRegistry({ now: () => now, sweepMs: 0, defaultHeartbeatMs: 1000, missedHeartbeats: 3, forgetAfterMs: 60_000 });
  const changes: string[] = [];
  registry.onChange((c: AgentChange) => changes.push(`${c.kind}:${c.agent.agentId}`));
  return { registry, changes, advance: (ms: number) => (now += ms) };
}

test("HELLO adds, missed heartbeats make offline, a heartbeat brings it back", () => {
  const { registry, changes, advance } = setup();
  registry.handle(hello("vm.1", "b1", { role: "worker" }));
  assert.equal(registry.get("vm.1")?.state, "online");
  assert.deepEqual(registry.get("vm.1")?.labels, { role: "worker" });
  registry.handle({ type: "HEARTBEAT", agentId: "vm.1", bootId: "b1", intervalMs: 500, running: 2, sentAt: 1 });
  advance(1400);
  registry.sweep();
  assert.equal(registry.get("vm.1")?.state, "online", "1.4 s < 3 × 500 ms");
  advance(200);
  registry.sweep();
  assert.equal(registry.get("vm.1")?.state, "offline");
  assert.match(registry.get("vm.1")?.offlineReason ?? "", /no heartbeat/);
  registry.handle({ type: "HEARTBEAT", agentId: "vm.1", bootId: "b1", intervalMs: 500, running: 0, sentAt: 1 });
  assert.equal(registry.get("vm.1")?.state, "online");
  assert.deepEqual(changes, ["added:vm.1", "offline:vm.1", "online:vm.1"]);
});

test("silence is not counted while the controller is disconnected", () => {
  const { registry, advance } = setup();
  registry.handle(hello("vm.1"));
  registry.suspend();
  advance(10_000);
  registry.sweep();
  assert.equal(registry.get("vm.1")?.state, "online");
  registry.resume();
  advance(2000);
  registry.sweep();
  assert.equal(registry.get("vm.1")?.state, "online");
  advance(1500);
  registry.sweep();
  assert.equal(registry.get("vm.1")?.state, "offline");
});

test("BYE is honoured only from the current boot; a new boot id is a restart", () => {
  const { registry, changes } = setup();
  registry.handle(hello("vm.1", "b1"));
  registry.handle(hello("vm.1", "b2"));
  registry.handle({ type: "BYE", agentId: "vm.1", bootId: "b1" });
  assert.equal(registry.get("vm.1")?.state, "online");
  registry.handle({ type: "BYE", agentId: "vm.1", bootId: "b2", reason: "shutdown" });
  assert.equal(registry.get("vm.1")?.state, "offline");
  assert.match(registry.get("vm.1")?.offlineReason ?? "", /BYE: shutdown/);
  assert.deepEqual(changes, ["added:vm.1", "restarted:vm.1", "offline:vm.1"]);
});

test("invalid presence is dropped; the cap bounds memory; offline agents are forgotten", () => {
  let now = 0;
  const registry = new AgentRegistry({ now: () => now, sweepMs: 0, maxAgents: 2, forgetAfterMs: 1000, defaultHeartbeatMs: 100 });
  registry.handle({ type: "HELLO", agentId: "../../etc" });
  registry.handle("garbage");
  registry.handle(hello("a"));
  registry.handle(hello("b"));
  registry.handle(hello("c"));
  assert.deepEqual(registry.list().map((a) => a.agentId), ["a", "b"]);
  now = 500;
  registry.sweep();
  assert.equal(registry.online().length, 0);
  now = 1600;
  registry.sweep();
  assert.equal(registry.size, 0);
});

test("the heartbeat period announced in HELLO decides when silence means gone", () => {
  let now = 0;
  const registry = new AgentRegistry({ now: () => now, sweepMs: 0, defaultHeartbeatMs: 1000 });
  registry.handle({ ...hello("slow"), heartbeatMs: 10_000 });
  registry.handle(hello("default"));
  now = 5000;
  registry.sweep();
  assert.equal(registry.get("slow")?.state, "online");
  assert.equal(registry.get("default")?.state, "offline");
});
