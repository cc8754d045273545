import { test } from "node:test";
import assert from "node:assert/strict";
import { expandTarget, matchesTarget, parseTarget, TargetSyntaxError } from "@vmc/server/fleet/target";

const agents: Array<{ agentId: string; labels: Record<string, string> }> = [
  { agentId: "vm.1.2.7", labels: { role: "worker", zone: "eu-1" } },
  { agentId: "vm.1.2.8", labels: { role: "db" } },
  { agentId: "vm.1.2.7.3", labels: {} },
  { agentId: "vm.1.7", labels: { role: "worker" } },
  { agentId: "vm.10", labels: {} },
  { agentId: "host", labels: { role: "worker" } },
];
const ids = (target: string) => expandTarget(parseTarget(target), agents).agentIds;

test("* matches within one segment only; ** crosses dots", () => {
  assert.deepEqual(ids("vm.1.2.*"), ["vm.1.2.7", "vm.1.2.8"]);
  assert.deepEqual(ids("vm.*.7"), ["vm.1.7"]);
  assert.deepEqual(ids("vm.**"), ["vm.1.2.7", "vm.1.2.7.3", "vm.1.2.8", "vm.1.7", "vm.10"]);
  assert.deepEqual(ids("**"), agents.map((a) => a.agentId).sort());
  assert.deepEqual(ids("*"), ["host"]);
  assert.deepEqual(ids("vm.1*"), ["vm.10"]);
  assert.deepEqual(ids("vm.1.2.?"), ["vm.1.2.7", "vm.1.2.8"]);
  assert.deepEqual(ids("vm.**.7"), ["vm.1.2.7", "vm.1.7"]);
});

test("labels, negation, value globs, comma unions and & intersections", () => {
  assert.deepEqual(ids("role=worker"), ["host", "vm.1.2.7", "vm.1.7"]);
  assert.deepEqual(ids("vm.**&role=worker"), ["vm.1.2.7", "vm.1.7"]);
  assert.deepEqual(ids("role=worker&zone=eu-*"), ["vm.1.2.7"]);
  assert.deepEqual(ids("vm.1.2.*&role!=worker"), ["vm.1.2.8"]);
  assert.deepEqual(ids("vm.1.2.8, host"), ["host", "vm.1.2.8"]);
  assert.deepEqual(ids("role=nothing"), []);
});

test("a literal id is addressed even when unknown; patterns only reach known agents", () => {
  const e = expandTarget(parseTarget("vm.9.9,vm.1.2.*"), agents);
  assert.deepEqual(e.agentIds, ["vm.1.2.7", "vm.1.2.8", "vm.9.9"]);
  assert.deepEqual(e.unknownLiterals, ["vm.9.9"]);
  assert.deepEqual(expandTarget(parseTarget("vm.9.*"), agents).agentIds, []);
  // a literal inside an intersection is a filter, not an address
  assert.deepEqual(expandTarget(parseTarget("vm.9.9&role=worker"), agents).agentIds, []);
});

test("regex metacharacters in label values are literal", () => {
  const t = parseTarget("v=a.c");
  assert.equal(matchesTarget(t, { agentId: "x", labels: { v: "abc" } }), false);
  assert.equal(matchesTarget(t, { agentId: "x", labels: { v: "a.c" } }), true);
});

test("malformed targets are refused with a reason", () => {
  for (const bad of ["", "vm..1", "vm/1", "a,,b", "a,", "=x", "vm.1&", "vm 1", "x".repeat(1100)]) {
    assert.throws(() => parseTarget(bad), TargetSyntaxError, bad);
  }
});
