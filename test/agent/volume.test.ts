import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import { eventually, forEachBroker } from "./brokers";
import { spawnAgent, TestController } from "./fixture";

/** Resident set of `pid`, and its peak (VmHWM), in bytes. */
function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

forEachBroker("agent streams large output", (brokers) => {
  it("streams 100 MB (30 MB on RabbitMQ) of output in order with bounded agent memory and a bounded tail", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey });
    await controller.hello(id);
    const idle = memory(agent.pid);
    // 100 MB through the embedded broker; RabbitMQ's STOMP adapter is the slow leg here, so less there unless asked.
    const megabytes = Number(process.env.VMC_TEST_OUTPUT_MB ?? (broker.kind === "embedded" ? 100 : 30));
    const total = megabytes * 1000 * 1000;
    const cmd = controller.run(id, { argv: ["head", "-c", String(total), "/dev/zero"], tailBytes: 4096 });
    await controller.send(id, cmd);
    let sampledPeak = 0;
    const sampler = setInterval(() => {
      try {
        sampledPeak = Math.max(sampledPeak, memory(agent.pid).rss);
      } catch {
        // exited
      }
    }, 50);
    t.after(() => clearInterval(sampler));
    const result = await controller.result(cmd.cmdId, 1, 180_000);
    clearInterval(sampler);
    const { hwm } = memory(agent.pid);
    const stdout = controller.stream(cmd.cmdId, "stdout");
    assert.equal(result.status, "exited");
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout.totalBytes, total);
    assert.equal(result.stdout.truncated, true);
    assert.equal(Buffer.from(result.stdout.data, "base64").length, 4096);
    // Every CMD_OUTPUT precedes the result on the same destination: all bytes are in, in order.
    await eventually("all output", () => (stdout.bytes === total ? true : undefined), 10_000);
    assert.ok(stdout.contiguous, "offsets have gaps or overlaps");
    const seqs = controller.output.get(cmd.cmdId)?.seqs ?? [];
    assert.deepEqual(seqs, seqs.map((_, i) => i), "seq is not 0, 1, 2, ...");
    const growth = hwm - idle.rss;
    t.diagnostic(`agent RSS idle ${(idle.rss / 2 ** 20).toFixed(1)} MiB, peak ${(hwm / 2 ** 20).toFixed(1)} MiB (sampled ${(sampledPeak / 2 ** 20).toFixed(1)} MiB), ${seqs.length} CMD_OUTPUT messages`);
    assert.ok(growth < 80 * 2 ** 20, `agent memory grew by ${(growth / 2 ** 20).toFixed(1)} MiB while streaming ${megabytes} MB`);
  });
});
