import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { it } from "node:test";
import { z } from "zod";
import { BusClient, type BusLogger, type BusState } from "@vmc/server/bus/client";
import { eventually, forEachBroker } from "../agent/brokers";
import { startFreezableProxy } from "./freezable-proxy";

const Ping = z.object({ type: z.literal("PING"), n: z.number().int() });

function recordingLog(): { log: BusLogger; lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, message) => lines.push(`${level}: ${message}`) };
}

forEachBroker("bus client", (brokers) => {
  it("round-trips JSON with a receipt and drops invalid bodies with a logged reason", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const { log, lines } = recordingLog();
    const bus = new BusClient({ brokerUrl: broker.url, name: "json", log });
    t.after(() => bus.close());
    await bus.connect(10_000);
    const queue = `/queue/vmc.test.${randomUUID()}`;
    const got: number[] = [];
    const sub = bus.subscribeJson(queue, Ping, (value) => void got.push(value.n), { ack: "client-individual", autoDelete: true, durable: false });
    await sub.ready;
    await bus.publish(queue, "{not json", { receipt: true, headers: { durable: "false", "auto-delete": "true" } });
    await bus.publishJson(queue, { type: "PING", n: "one" }, { receipt: true, headers: { durable: "false", "auto-delete": "true" } });
    await bus.publishJson(queue, { type: "PING", n: 7 }, { receipt: true, headers: { durable: "false", "auto-delete": "true" } });
    await eventually("the valid message", () => (got.length > 0 ? true : undefined));
    assert.deepEqual(got, [7]);
    assert.ok(lines.some((l) => l.includes("invalid JSON")), lines.join("\n"));
    assert.ok(lines.some((l) => l.includes("schema mismatch") && l.includes("n:")), lines.join("\n"));
  });

  it("carries binary bodies byte for byte", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const bus = new BusClient({ brokerUrl: broker.url, name: "binary" });
    t.after(() => bus.close());
    await bus.connect(10_000);
    const topic = `/topic/vmc.test.${randomUUID()}`;
    const payload = new Uint8Array(300_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7919) & 0xff;
    let received: Uint8Array | undefined;
    const sub = bus.subscribe(topic, (m) => void (received = m.binaryBody.slice()));
    await sub.ready;
    await bus.publish(topic, payload, { receipt: true });
    const got = await eventually("the binary message", () => received);
    assert.equal(got.length, payload.length);
    assert.ok(Buffer.from(got).equals(Buffer.from(payload)), "binary body differs");
  });

  it("reconnects after a broker restart, resubscribes, and reports its states", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const bus = new BusClient({ brokerUrl: broker.url, name: "restart", heartbeatIncomingMs: 1000, log: () => undefined });
    t.after(() => bus.close());
    const states: BusState[] = [];
    bus.onState((s) => states.push(s));
    await bus.connect(10_000);
    const topic = `/topic/vmc.test.${randomUUID()}`;
    const got: number[] = [];
    bus.subscribeJson(topic, Ping, (v) => void got.push(v.n));
    await broker.restart();
    await eventually("reconnection", () => (states.lastIndexOf("connected") > states.indexOf("disconnected") && states.includes("disconnected") ? true : undefined), 30_000);
    assert.ok(states.includes("reconnecting"), states.join(","));
    const other = new BusClient({ brokerUrl: broker.url, name: "sender" });
    t.after(() => other.close());
    await other.connect(10_000);
    // The re-subscription is in flight right after CONNECTED; publish until one arrives.
    for (let n = 0; got.length === 0 && n < 200; n++) {
      await other.publishJson(topic, { type: "PING", n }, { receipt: true });
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(got.length > 0, "no message after the restart: subscription was not restored");
  });

  it("detects a silently dead socket through missing broker heartbeats and reconnects", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const proxy = await startFreezableProxy(broker.host, broker.port);
    t.after(() => proxy.close());
    const bus = new BusClient({ brokerUrl: proxy.url, name: "frozen", heartbeatIncomingMs: 500, log: () => undefined });
    t.after(() => bus.close());
    const states: BusState[] = [];
    bus.onState((s) => states.push(s));
    await bus.connect(10_000);
    const frozenAt = performance.now();
    proxy.freeze();
    await eventually("a second connection", () => (proxy.accepted >= 2 && bus.connected ? true : undefined), 15_000);
    const elapsed = performance.now() - frozenAt;
    assert.ok(states.includes("disconnected"), states.join(","));
    assert.ok(elapsed < 5_000, `took ${Math.round(elapsed)} ms to notice a dead link with 500 ms heartbeats`);
  });

  it("redelivers an unacknowledged client-individual message after a reconnect", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const bus = new BusClient({ brokerUrl: broker.url, name: "acks", log: () => undefined });
    t.after(() => bus.close());
    await bus.connect(10_000);
    const queue = `/queue/vmc.test.${randomUUID()}`;
    const seen: string[] = [];
    let ackNow = false;
    bus.subscribe(
      queue,
      (m) => {
        seen.push(m.body);
        if (ackNow) m.ack();
      },
      { ack: "client-individual", prefetch: 10 },
    );
    await bus.publish(queue, "hello", { receipt: true });
    await eventually("first delivery", () => (seen.length >= 1 ? true : undefined));
    ackNow = true;
    bus.reconnectNow("test");
    await eventually("redelivery", () => (seen.length >= 2 ? true : undefined), 15_000);
    assert.deepEqual(seen.slice(0, 2), ["hello", "hello"]);
  });

  it("settles a message once: a second ack or nack is not sent and the connection stays up", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const { log, lines } = recordingLog();
    const bus = new BusClient({ brokerUrl: broker.url, name: "ack-once", log });
    t.after(() => bus.close());
    const states: BusState[] = [];
    bus.onState((s) => states.push(s));
    await bus.connect(10_000);
    const queue = `/queue/vmc.test.${randomUUID()}`;
    const seen: string[] = [];
    const sub = bus.subscribe(
      queue,
      (m) => {
        seen.push(m.body);
        m.ack();
        // A broker treats a repeated ACK of one delivery tag as a protocol error and drops the
        // connection (both RabbitMQ and ours): the client must not send it.
        m.ack();
        m.nack();
      },
      { ack: "client-individual", prefetch: 1 },
    );
    await sub.ready;
    for (const body of ["one", "two", "three"]) await bus.publish(queue, body, { receipt: true });
    await eventually("all three delivered", () => (seen.length >= 3 ? true : undefined), 15_000);
    // A receipted round trip after the last ack: an ERROR for it would have arrived first.
    await bus.publish(queue, "four", { receipt: true });
    await eventually("the fourth delivered", () => (seen.length >= 4 ? true : undefined), 15_000);
    assert.deepEqual(seen, ["one", "two", "three", "four"], "each delivered once, none redelivered");
    assert.deepEqual(states, ["connecting", "connected"], `no reconnect; log:\n${lines.join("\n")}`);
    assert.ok(!lines.some((l) => /unknown delivery tag|ERROR/i.test(l)), lines.join("\n"));
  });

  it("uses a caller-chosen subscription id and refuses a duplicate", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const bus = new BusClient({ brokerUrl: broker.url, name: "ids" });
    t.after(() => bus.close());
    await bus.connect(10_000);
    const topic = `/topic/vmc.test.${randomUUID()}`;
    let subscriptionHeader: string | undefined;
    const sub = bus.subscribe(topic, (m) => void (subscriptionHeader = m.headers.subscription), { headers: { id: "fixed-id" } });
    await sub.ready;
    assert.throws(() => bus.subscribe(topic, () => undefined, { headers: { id: "fixed-id" } }), /already in use/);
    await bus.publish(topic, "x", { receipt: true });
    assert.equal(await eventually("delivery", () => subscriptionHeader), "fixed-id");
  });

  it("rejects publish on a closed client and reports drained without a connection", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const bus = new BusClient({ brokerUrl: broker.url, name: "closed" });
    await bus.connect(10_000);
    await bus.close();
    assert.equal(bus.state, "closed");
    await assert.rejects(bus.publish("/topic/x", "y"), /closed/);
    await bus.drained();
  });
});
