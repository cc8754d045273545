import { test } from "node:test";
import assert from "node:assert/strict";
import { LinePrefixer, runJson, summaryTable } from "@vmc/server/fleet/render";
import { exitStatus, parseRunArgs } from "@vmc/server/cli/run";
import type { RunReport, TargetOutcome } from "@vmc/server/fleet/outcome";

test("several agents' output is prefixed line by line, partial lines held per agent and stream", () => {
  const out: string[] = [];
  const p = new LinePrefixer((stream, data) => void out.push(`${stream}|${data.toString()}`));
  p.push("a", "stdout", Buffer.from("one\ntw"));
  p.push("b", "stdout", Buffer.from("bee\n"));
  p.push("a", "stderr", Buffer.from("err"));
  p.push("a", "stdout", Buffer.from("o\n"));
  p.flush("a");
  assert.deepEqual(out, ["stdout|a: one\n", "stdout|b: bee\n", "stdout|a: two\n", "stderr|a: err\n"]);
});

function outcome(over: Partial<TargetOutcome>): TargetOutcome {
  const empty = { data: Buffer.alloc(0), totalBytes: 0, truncated: false };
  return { agentId: "a", cmdId: "c-1", status: "succeeded", agentStatus: "exited", exitCode: 0, signal: null, stdout: empty, stderr: empty, resources: null, startedAt: 1, finishedAt: 2, outputLostBytes: 0, ...over };
}
function report(targets: TargetOutcome[]): RunReport {
  const counts = { succeeded: 0, failed: 0, timedOut: 0, cancelled: 0, unreachable: 0, rolledBack: 0 };
  for (const t of targets) counts[t.status]++;
  return { runId: "r", target: "x", argv: ["true"], startedAt: 0, finishedAt: 1, targets, counts, ok: targets.length > 0 && counts.succeeded === targets.length };
}

test("exit status: the one target's code, 128+signal, 124, 130; 1 for several", () => {
  assert.equal(exitStatus(report([outcome({})])), 0);
  assert.equal(exitStatus(report([outcome({ status: "failed", exitCode: 7 })])), 7);
  assert.equal(exitStatus(report([outcome({ status: "failed", exitCode: null, signal: "SIGKILL" })])), 137);
  assert.equal(exitStatus(report([outcome({ status: "timedOut", agentStatus: "timedOut" })])), 124);
  assert.equal(exitStatus(report([outcome({ status: "cancelled", agentStatus: "cancelled" })])), 130);
  assert.equal(exitStatus(report([outcome({ status: "unreachable", agentStatus: null, exitCode: null })])), 1);
  assert.equal(exitStatus(report([outcome({}), outcome({ agentId: "b", status: "failed", exitCode: 3 })])), 1);
});

test("the JSON document has one entry per target with the contract's fields; the table names the reason", () => {
  const r = report([outcome({ stdout: { data: Buffer.from("hi\n"), totalBytes: 3, truncated: false } }), outcome({ agentId: "b", status: "unreachable", agentStatus: null, exitCode: null, reason: "gone" })]);
  const j = runJson(r);
  assert.equal(j.targets.length, 2);
  assert.deepEqual(Object.keys(j.targets[0]!).filter((k) => ["agentId", "status", "exitCode", "signal", "stdout", "stderr", "resources"].includes(k)).sort(), ["agentId", "exitCode", "resources", "signal", "status", "stderr", "stdout"]);
  assert.equal(j.targets[0]!.stdout, "hi\n");
  assert.equal(j.targets[1]!.reason, "gone");
  assert.match(summaryTable(r), /b\s+unreachable\s+-.*gone/);
  assert.match(summaryTable(r), /2 targets: 1 succeeded, 1 unreachable/);
});

test("vmc run arguments: options before --, the command after it, bad input refused", () => {
  const parsed = parseRunArgs(["vm.1.*", "--timeout", "1.5", "--env", "A=b=c", "--json", "--", "ls", "-l", "--", "x"]);
  assert.notEqual(parsed, "help");
  if (parsed === "help") return;
  assert.deepEqual(parsed.request.argv, ["ls", "-l", "--", "x"]);
  assert.equal(parsed.request.timeoutMs, 1500);
  assert.deepEqual(parsed.request.env, { A: "b=c" });
  assert.equal(parsed.request.stream, false);
  assert.throws(() => parseRunArgs(["vm..1", "--", "true"]), /bad target/);
  assert.throws(() => parseRunArgs(["vm.1"]), /missing the command/);
  assert.throws(() => parseRunArgs(["vm.1", "--timeout", "0", "--", "true"]), /positive/);
  assert.throws(() => parseRunArgs(["vm.1", "--env", "NOEQUALS", "--", "true"]), /K=V/);
});
