// Persistence: kill -9 the broker with persistent messages queued and some delivered but not
// acknowledged; restart on the same data dir; every unacked one is delivered, none twice to the
// consumer that acked it. Also survives a torn journal tail.
import { after, it } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { RawClient, type ReceivedFrame } from "./raw-client";

let broker: EmbeddedBroker | undefined;
const clients: RawClient[] = [];
after(async () => {
  for (const c of clients) c.destroy();
  await broker?.stop();
});

/** Reads MESSAGEs until `expected` arrived (each within 10 s), then until `quietMs` pass with nothing more. */
async function drain(c: RawClient, expected: number, quietMs = 500): Promise<ReceivedFrame[]> {
  const out: ReceivedFrame[] = [];
  for (;;) {
    let f: ReceivedFrame;
    try {
      f = await c.next(out.length < expected ? 10_000 : quietMs);
    } catch {
      return out;
    }
    assert.equal(f.command, "MESSAGE", `${f.command}: ${f.body.toString()}`);
    out.push(f);
  }
}

it("kill -9 with persistent messages queued and unacked: all delivered after restart, none twice", async () => {
  broker = await startEmbeddedBroker();
  const total = 300;
  const q = "/queue/crash";
  const p = await RawClient.login(broker.port);
  clients.push(p);
  for (let i = 0; i < total; i++) {
    const headers: Record<string, string> = { destination: q, persistent: "true", "x-n": String(i) };
    if (i === total - 1) await p.withReceipt("SEND", headers, `p${i}`);
    else p.frame("SEND", headers, `p${i}`);
  }
  await p.withReceipt("SEND", { destination: q }, "transient"); // not persistent: lost on restart, as RabbitMQ

  const c = await RawClient.login(broker.port);
  clients.push(c);
  await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual", "prefetch-count": "60" });
  const delivered: ReceivedFrame[] = [];
  for (let i = 0; i < 60; i++) delivered.push(await c.next());
  const acked = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const m = delivered[i]!;
    acked.add(m.body.toString());
    if (i === 39) delivered.push(...(await c.untilReceipt("ACK", { id: m.headers.ack! })));
    else c.frame("ACK", { id: m.headers.ack! });
  }
  assert.ok(delivered.length >= 60 && delivered.length <= 100, `delivered ${delivered.length}`);
  const unackedBefore = new Set(delivered.slice(40).map((m) => m.body.toString()));

  await broker.kill("SIGKILL");
  // A write torn by the crash: garbage after the last whole record must be ignored.
  appendFileSync(join(broker.dataDir, "journal.log"), Buffer.from([0x40, 0, 0, 0, 1, 2, 3]));
  await broker.restart();
  assert.match(broker.log(), /torn tail/);

  const d = await RawClient.login(broker.port);
  clients.push(d);
  await d.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
  const after = await drain(d, total - acked.size);
  const bodies = after.map((m) => m.body.toString());
  assert.equal(new Set(bodies).size, bodies.length, "no message delivered twice");
  for (const b of bodies) assert.ok(!acked.has(b), `${b} was acked before the crash and came back`);
  assert.ok(!bodies.includes("transient"));
  const expected = Array.from({ length: total }, (_, i) => `p${i}`).filter((b) => !acked.has(b));
  assert.deepEqual(bodies.slice().sort(), expected.slice().sort(), "every unacked persistent message is delivered");
  for (const m of after) {
    if (unackedBefore.has(m.body.toString())) assert.equal(m.headers.redelivered, "true");
    assert.equal(m.headers.persistent, "true");
    assert.equal(m.headers["x-n"], m.body.toString().slice(1), "headers survive the journal");
  }
  for (const m of after) d.frame("ACK", { id: m.headers.ack! });
  await d.withReceipt("UNSUBSCRIBE", { id: "s" });

  // Acks after the restart are journaled too: a second crash brings nothing back.
  await broker.kill("SIGKILL");
  await broker.restart();
  const e = await RawClient.login(broker.port);
  clients.push(e);
  await e.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
  assert.deepEqual(await drain(e, 0), []);
  assert.ok(readFileSync(join(broker.dataDir, "broker.pid"), "utf8").trim() === String(broker.pid));
});

it("compacts a mostly-acked journal while running, and recovers from the compacted file", async () => {
  const b = await startEmbeddedBroker({ extraArgs: ["--journal-compact-bytes", "262144"] });
  try {
    const q = "/queue/compact";
    const c = await RawClient.login(b.port);
    clients.push(c);
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual", "prefetch-count": "100" });
    const body = "x".repeat(1024);
    const keep = new Set<string>();
    let received = 0;
    for (let i = 0; i < 1000; i++) c.frame("SEND", { destination: q, persistent: "true" }, `${i}:${body}`);
    while (received < 1000) {
      const m = await c.next();
      received++;
      const n = Number(m.body.toString().split(":")[0]);
      if (n % 200 === 0) keep.add(String(n));
      else c.frame("ACK", { id: m.headers.ack! });
    }
    await c.untilReceipt("SEND", { destination: "/queue/compact.flush" }, "barrier");
    const deadline = Date.now() + 5000;
    while (!/journal compacted/.test(b.log()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.match(b.log(), /journal compacted/);
    const size = statSync(join(b.dataDir, "journal.log")).size;
    assert.ok(size < 600_000, `journal is ${size} bytes after compaction (1000 × 1 KiB were written)`);
    await b.kill("SIGKILL");
    await b.restart();
    const d = await RawClient.login(b.port);
    clients.push(d);
    await d.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
    const back = (await drain(d, keep.size)).map((m) => m.body.toString().split(":")[0]!);
    assert.deepEqual(back.sort(), [...keep].sort());
  } finally {
    await b.stop();
  }
});

it("SIGTERM shuts down cleanly (journal flushed, pid file removed) and a restart delivers what was queued", async () => {
  const b = await startEmbeddedBroker();
  try {
    const p = await RawClient.login(b.port);
    clients.push(p);
    for (let i = 0; i < 50; i++) p.frame("SEND", { destination: "/queue/term", persistent: "true" }, `t${i}`);
    await p.withReceipt("SEND", { destination: "/queue/term", persistent: "true" }, "t50");
    await b.kill("SIGTERM");
    assert.match(b.log(), /SIGTERM: shutting down[\s\S]*stopped/);
    assert.ok(!existsSync(join(b.dataDir, "broker.pid")));
    await b.restart();
    const c = await RawClient.login(b.port);
    clients.push(c);
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: "/queue/term" });
    const got = (await drain(c, 51)).map((m) => m.body.toString());
    assert.deepEqual(got, Array.from({ length: 51 }, (_, i) => `t${i}`), "all, in order");
  } finally {
    await b.stop();
  }
});
