import { test } from "node:test";
import assert from "node:assert/strict";
import { CommandRun, type RunContext } from "@vmc/server/fleet/command";
import type { CmdResult } from "@vmc/protocol/bus";

function context(online: Set<string>, sent: Array<{ agentId: string; message: Record<string, unknown> }>): RunContext {
  return {
    replyTo: "/topic/vmc.controller.test",
    timings: { awayGraceMs: 10, resultGraceMs: 50, offlineGraceMs: 20, cancelGraceMs: 30 },
    now: Date.now,
    sign: (m) => ({ ...m, signature: "sig" }),
    isOnline: (id) => online.has(id),
    describeAway: (id) => `agent ${id} is not known`,
    send: async (agentId, message) => void sent.push({ agentId, message: message as Record<string, unknown> }),
    finished: () => {},
  };
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
function result(cmdId: string, agentId: string, over: Partial<CmdResult> = {}): CmdResult {
  return {
    type: "CMD_RESULT", cmdId, agentId, status: "exited", exitCode: 0, signal: null,
    stdout: { data: "", totalBytes: 0, truncated: false }, stderr: { data: "", totalBytes: 0, truncated: false },
    startedAt: 1, finishedAt: 2, resources: null, replayed: false, ...over,
  };
}

test("each target gets its own signed CMD_RUN; every target ends in exactly one status", async () => {
  const sent: Array<{ agentId: string; message: Record<string, unknown> }> = [];
  const run = new CommandRun({ target: "vm.*", argv: ["true"], timeoutMs: 20, expiresInMs: 30 }, ["vm.a", "vm.b", "vm.c", "vm.d"], context(new Set(["vm.a", "vm.b", "vm.c"]), sent));
  await run.start();
  assert.deepEqual(sent.map((s) => s.agentId).sort(), ["vm.a", "vm.b", "vm.c", "vm.d"]);
  assert.equal(new Set(sent.map((s) => s.message.cmdId)).size, 4, "one cmdId per target");
  for (const s of sent) assert.equal(s.message.agentId, s.agentId);
  const id = (a: string) => sent.find((s) => s.agentId === a)!.message.cmdId as string;
  run.handleResult(result(id("vm.a"), "vm.a"));
  run.handleResult(result(id("vm.b"), "vm.b", { exitCode: null, signal: "SIGKILL" }));
  run.agentChanged("vm.c", "offline", "no heartbeat");
  const report = await run.done;
  const by = Object.fromEntries(report.targets.map((t) => [t.agentId, t]));
  assert.equal(by["vm.a"]!.status, "succeeded");
  assert.equal(by["vm.b"]!.status, "failed");
  assert.match(by["vm.b"]!.reason!, /SIGKILL/);
  assert.equal(by["vm.c"]!.status, "unreachable");
  assert.match(by["vm.c"]!.reason!, /went offline.*no heartbeat/);
  assert.equal(by["vm.d"]!.status, "unreachable");
  assert.match(by["vm.d"]!.reason!, /not known.*expired/);
  assert.deepEqual(report.counts, { succeeded: 1, failed: 1, timedOut: 0, cancelled: 0, unreachable: 2, rolledBack: 0 });
  assert.equal(report.ok, false);
});

test("output is passed on once, in order; what the stream missed comes from the result's tail", async () => {
  const sent: Array<{ agentId: string; message: Record<string, unknown> }> = [];
  const out: string[] = [];
  const run = new CommandRun({ target: "a", argv: ["x"] }, ["a"], context(new Set(["a"]), sent), { onOutput: (_a, s, d) => void out.push(`${s}:${d}`) });
  await run.start();
  const cmdId = sent[0]!.message.cmdId as string;
  const output = (offset: number, data: string, seq: number) => run.handleOutput({ type: "CMD_OUTPUT", cmdId, agentId: "a", stream: "stdout", seq, offset, data: b64(data) });
  output(0, "hello ", 0);
  output(0, "hello ", 0); // redelivered duplicate
  output(3, "lo wor", 1); // overlap
  run.handleResult(result(cmdId, "a", { stdout: { data: b64("world!\n"), totalBytes: 13, truncated: true } }));
  const report = await run.done;
  assert.deepEqual(out, ["stdout:hello ", "stdout:wor", "stdout:ld!\n"]);
  assert.equal(report.targets[0]!.stdout.totalBytes, 13);
  assert.equal(report.targets[0]!.stdout.truncated, true);
});

test("cancel: away targets end cancelled at once, online ones wait for the agent's word", async () => {
  const sent: Array<{ agentId: string; message: Record<string, unknown> }> = [];
  const run = new CommandRun({ target: "a,b,c", argv: ["sleep", "9"] }, ["a", "b", "c"], context(new Set(["a", "b"]), sent));
  await run.start();
  run.cancel();
  const cancels = sent.filter((s) => s.message.type === "CMD_CANCEL");
  assert.equal(cancels.length, 3);
  for (const c of cancels) assert.equal(c.message.signature, "sig");
  const cmdA = sent.find((s) => s.agentId === "a" && s.message.type === "CMD_RUN")!.message.cmdId as string;
  run.handleResult(result(cmdA, "a", { status: "cancelled", exitCode: null, signal: "SIGTERM" }));
  const report = await run.done;
  assert.deepEqual(report.targets.map((t) => `${t.agentId}:${t.status}`), ["a:cancelled", "b:unreachable", "c:cancelled"]);
});

test("a timed-out command with no result at all is unreachable after the grace, not hanging", async () => {
  const sent: Array<{ agentId: string; message: Record<string, unknown> }> = [];
  const run = new CommandRun({ target: "a", argv: ["x"], timeoutMs: 10 }, ["a"], context(new Set(["a"]), sent));
  await run.start();
  const report = await run.done;
  assert.equal(report.targets[0]!.status, "unreachable");
  assert.match(report.targets[0]!.reason!, /no result 50 ms after the command's 10 ms timeout/);
});

test("a chunk lost in transit is reported, never silently skipped", async () => {
  const sent: Array<{ agentId: string; message: Record<string, unknown> }> = [];
  const lost: string[] = [];
  const run = new CommandRun({ target: "a", argv: ["x"] }, ["a"], context(new Set(["a"]), sent), {
    onOutputLost: (_a, s, from, to) => void lost.push(`${s}:${from}-${to}`),
  });
  await run.start();
  const cmdId = sent[0]!.message.cmdId as string;
  run.handleOutput({ type: "CMD_OUTPUT", cmdId, agentId: "a", stream: "stdout", seq: 0, offset: 0, data: b64("aaaa") });
  run.handleOutput({ type: "CMD_OUTPUT", cmdId, agentId: "a", stream: "stdout", seq: 2, offset: 8, data: b64("cccc") });
  run.handleResult(result(cmdId, "a", { stdout: { data: b64("cc"), totalBytes: 12, truncated: true } }));
  const report = await run.done;
  assert.deepEqual(lost, ["stdout:4-8"]);
  assert.equal(report.targets[0]!.outputLostBytes, 4);
});
