// Messaging semantics of `vmc broker`, as RabbitMQ's STOMP plugin behaves: competing consumers,
// topics, ack modes, redelivery, prefetch, expiry, reply queues, transactions, receipts.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { RawClient, type ReceivedFrame } from "./raw-client";

let broker: EmbeddedBroker;
const open: RawClient[] = [];
before(async () => {
  broker = await startEmbeddedBroker();
});
after(async () => {
  for (const c of open) c.destroy();
  await broker?.stop();
});

let seq = 0;
const unique = (p: string) => `${p}.${process.pid}.${++seq}`;
async function client(headers: Record<string, string> = {}): Promise<RawClient> {
  const c = await RawClient.login(broker.port, headers);
  open.push(c);
  return c;
}
async function messages(c: RawClient, n: number): Promise<ReceivedFrame[]> {
  const out: ReceivedFrame[] = [];
  for (let i = 0; i < n; i++) {
    const f = await c.next();
    assert.equal(f.command, "MESSAGE", `frame ${i}: ${f.command} ${f.headers.message ?? ""}`);
    out.push(f);
  }
  return out;
}
const bodies = (fs: ReceivedFrame[]) => fs.map((f) => f.body.toString());

describe("queues", () => {
  it("keeps messages while nobody consumes, then delivers them in order", async () => {
    const q = "/queue/" + unique("keep");
    const p = await client();
    for (let i = 0; i < 5; i++) p.frame("SEND", { destination: q }, `m${i}`);
    await p.withReceipt("SEND", { destination: q }, "m5");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q });
    const got = await messages(c, 6);
    assert.deepEqual(bodies(got), ["m0", "m1", "m2", "m3", "m4", "m5"]);
    for (const m of got) {
      assert.equal(m.headers.subscription, "s");
      assert.equal(m.headers.destination, q);
      assert.equal(m.headers.redelivered, "false");
    }
  });

  it("competing consumers share round-robin, each message once", async () => {
    const q = "/queue/" + unique("rr");
    const a = await client();
    const b = await client();
    await a.withReceipt("SUBSCRIBE", { id: "a", destination: q });
    await b.withReceipt("SUBSCRIBE", { id: "b", destination: q });
    const p = await client();
    for (let i = 0; i < 10; i++) p.frame("SEND", { destination: q }, `${i}`);
    const ga = bodies(await messages(a, 5));
    const gb = bodies(await messages(b, 5));
    assert.deepEqual(ga, ["0", "2", "4", "6", "8"]);
    assert.deepEqual(gb, ["1", "3", "5", "7", "9"]);
    assert.ok(await a.quiet(200));
  });

  it("/amq/queue/ of a missing queue → ERROR not_found", async () => {
    const c = await client();
    c.frame("SUBSCRIBE", { id: "x", destination: "/amq/queue/" + unique("missing") });
    const f = await c.next();
    assert.equal(f.command, "ERROR");
    assert.match(f.body.toString(), /NOT_FOUND/);
    await c.waitClosed();
  });
});

describe("queue declaration", () => {
  it("redeclaring with different arguments → PRECONDITION_FAILED ERROR + close, as RabbitMQ", async () => {
    const q = "/queue/" + unique("inequiv");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, "x-expires": "60000" });
    const p = await client();
    p.frame("SEND", { destination: q }, "plain send declares with defaults");
    const f = await p.next();
    assert.equal(f.command, "ERROR");
    assert.match(f.body.toString(), /PRECONDITION_FAILED - inequivalent arg 'x-expires'/);
    await p.waitClosed();
    const got = await c.untilReceipt("SEND", { destination: q, "x-expires": "60000" }, "same args are fine");
    assert.equal(got.length <= 1 ? "ok" : "many", "ok");
  });
});

describe("non-durable /queue/ (RabbitMQ makes it exclusive)", () => {
  it("durable:false: other connections get RESOURCE_LOCKED; the queue goes with its connection", async () => {
    const name = unique("excl");
    const owner = await client();
    await owner.withReceipt("SUBSCRIBE", { id: "s", destination: `/queue/${name}`, durable: "false" });
    const other = await client();
    other.frame("SEND", { destination: `/queue/${name}`, durable: "false" }, "x");
    const f = await other.next();
    assert.equal(f.command, "ERROR");
    assert.match(f.body.toString(), /RESOURCE_LOCKED/);
    owner.destroy();
    await owner.waitClosed();
    const probe = await client();
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      const c = await client();
      c.frame("SUBSCRIBE", { id: "p", destination: `/amq/queue/${name}`, receipt: "r" });
      const answer = await c.next();
      gone = answer.command === "ERROR" && /NOT_FOUND/.test(answer.body.toString());
      c.destroy();
      if (!gone) await new Promise((r) => setTimeout(r, 20)); // the broker sees the close a moment later
    }
    probe.destroy();
    assert.ok(gone, "exclusive queue deleted when its connection closed");
  });
});

describe("durable topic subscriptions", () => {
  it("keep messages while the subscriber is away, and expire with x-expires", async () => {
    const key = unique("dts");
    const headers = { id: "ctl", destination: `/topic/${key}`, durable: "true", "auto-delete": "false", "x-expires": "1500", ack: "client-individual" };
    const c = await client();
    await c.withReceipt("SUBSCRIBE", headers);
    c.destroy();
    const p = await client();
    await p.withReceipt("SEND", { destination: `/topic/${key}`, persistent: "true" }, "while away");
    const back = await client();
    await back.withReceipt("SUBSCRIBE", headers);
    const [m] = await messages(back, 1);
    assert.equal(m!.body.toString(), "while away");
    assert.equal(m!.headers.destination, `/topic/${key}`);
    await back.withReceipt("ACK", { id: m!.headers.ack! });
    back.destroy();
    await new Promise((r) => setTimeout(r, 2800)); // x-expires 1.5 s + the 1 s sweep
    await p.withReceipt("SEND", { destination: `/topic/${key}` }, "after expiry");
    const again = await client();
    await again.withReceipt("SUBSCRIBE", headers);
    assert.ok(await again.quiet(200), "the expired subscription's queue did not keep messages");
  });
});

describe("topics", () => {
  it("fan out to every subscriber, wildcards as amq.topic, nothing kept without subscribers", async () => {
    const key = unique("t");
    const p = await client();
    await p.withReceipt("SEND", { destination: `/topic/${key}.a` }, "lost");
    const a = await client();
    const b = await client();
    const w = await client();
    await a.withReceipt("SUBSCRIBE", { id: "1", destination: `/topic/${key}.a` });
    await b.withReceipt("SUBSCRIBE", { id: "1", destination: `/topic/${key}.a` });
    await w.withReceipt("SUBSCRIBE", { id: "1", destination: `/topic/${key}.*` });
    p.frame("SEND", { destination: `/topic/${key}.a` }, "one");
    p.frame("SEND", { destination: `/topic/${key}.b` }, "two");
    assert.deepEqual(bodies(await messages(a, 1)), ["one"]);
    assert.deepEqual(bodies(await messages(b, 1)), ["one"]);
    assert.deepEqual(bodies(await messages(w, 2)), ["one", "two"]);
    assert.ok(await a.quiet(150), "'lost' was not kept and .b is not routed to .a");
  });
});

describe("acknowledgement", () => {
  it("client-individual: NACK redelivers with redelivered:true; ACK removes", async () => {
    const q = "/queue/" + unique("ci");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
    c.frame("SEND", { destination: q }, "x");
    const [m] = await messages(c, 1);
    assert.ok(m!.headers.ack, "1.2 MESSAGE has an ack header");
    c.frame("NACK", { id: m!.headers.ack! });
    const [again] = await messages(c, 1);
    assert.equal(again!.body.toString(), "x");
    assert.equal(again!.headers.redelivered, "true");
    await c.withReceipt("ACK", { id: again!.headers.ack! });
    assert.ok(await c.quiet(150));
  });

  it("client mode acks cumulatively; unacked ones come back when the consumer goes away", async () => {
    const q = "/queue/" + unique("cl");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client" });
    for (let i = 0; i < 4; i++) c.frame("SEND", { destination: q }, `${i}`);
    const got = await messages(c, 4);
    await c.withReceipt("ACK", { id: got[1]!.headers.ack! });
    c.destroy();
    const d = await client();
    await d.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
    const back = await messages(d, 2);
    assert.deepEqual(bodies(back), ["2", "3"]);
    assert.ok(back.every((m) => m.headers.redelivered === "true"));
  });

  it("1.1 acks with message-id + subscription", async () => {
    const q = "/queue/" + unique("v11");
    const c = await client({ "accept-version": "1.1" });
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
    c.frame("SEND", { destination: q }, "x");
    const [m] = await messages(c, 1);
    await c.withReceipt("ACK", { "message-id": m!.headers["message-id"]!, subscription: "s" });
  });

  it("ACK of an unknown id → ERROR + close", async () => {
    const c = await client();
    c.frame("ACK", { id: "T_nope@@session@@999" });
    assert.equal((await c.next()).command, "ERROR");
    await c.waitClosed();
  });

  it("prefetch-count limits unacked deliveries per subscription", async () => {
    const q = "/queue/" + unique("pf");
    const c = await client();
    const p = await client();
    for (let i = 0; i < 6; i++) p.frame("SEND", { destination: q }, `${i}`);
    await p.withReceipt("SEND", { destination: q }, "6");
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual", "prefetch-count": "2" });
    const first = await messages(c, 2);
    assert.ok(await c.quiet(200), "no third message before an ACK");
    c.frame("ACK", { id: first[0]!.headers.ack! });
    const third = await messages(c, 1);
    assert.equal(third[0]!.body.toString(), "2");
    assert.ok(await c.quiet(150));
  });
});

describe("expiry and reply queues", () => {
  it("expiration header drops the message when nobody took it in time", async () => {
    const q = "/queue/" + unique("exp");
    const p = await client();
    p.frame("SEND", { destination: q, expiration: "100" }, "short");
    await p.withReceipt("SEND", { destination: q, expiration: "60000" }, "long");
    await new Promise((r) => setTimeout(r, 300)); // let the 100 ms expiry pass (the thing under test is time)
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q });
    const [m] = await messages(c, 1);
    assert.equal(m!.body.toString(), "long");
    assert.equal(m!.headers.expiration, "60000", "expiration is passed through");
    assert.ok(await c.quiet(150));
  });

  it("x-message-ttl on the queue expires messages", async () => {
    const q = "/queue/" + unique("ttl");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, "x-message-ttl": "100", ack: "client-individual", "prefetch-count": "1" });
    await c.withReceipt("UNSUBSCRIBE", { id: "s" });
    await c.withReceipt("SEND", { destination: q, "x-message-ttl": "100" }, "gone");
    await new Promise((r) => setTimeout(r, 300));
    await c.withReceipt("SUBSCRIBE", { id: "s2", destination: q, "x-message-ttl": "100" });
    assert.ok(await c.quiet(200));
  });

  it("x-expires deletes an unused queue", async () => {
    const name = unique("xexp");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: `/queue/${name}`, "x-expires": "200" });
    await c.withReceipt("UNSUBSCRIBE", { id: "s" });
    await new Promise((r) => setTimeout(r, 1500)); // sweep runs each second
    c.frame("SEND", { destination: `/amq/queue/${name}` }, "x");
    const f = await c.next();
    assert.equal(f.command, "ERROR");
    assert.match(f.body.toString(), /NOT_FOUND/);
  });

  it("auto-delete queue goes away with its last consumer", async () => {
    const name = unique("ad");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: `/queue/${name}`, "auto-delete": "true", durable: "false" });
    await c.withReceipt("UNSUBSCRIBE", { id: "s" });
    c.frame("SUBSCRIBE", { id: "t", destination: `/amq/queue/${name}` });
    assert.equal((await c.next()).command, "ERROR");
  });

  it("/temp-queue/ reply-to is rewritten and replies come back on the sender's connection", async () => {
    const svc = "/queue/" + unique("svc");
    const server = await client();
    await server.withReceipt("SUBSCRIBE", { id: "srv", destination: svc });
    const req = await client();
    req.frame("SEND", { destination: svc, "reply-to": "/temp-queue/rpc" }, "ping");
    const [m] = await messages(server, 1);
    assert.match(m!.headers["reply-to"]!, /^\/reply-queue\//);
    server.frame("SEND", { destination: m!.headers["reply-to"]! }, "pong");
    const [reply] = await messages(req, 1);
    assert.equal(reply!.body.toString(), "pong");
    assert.equal(reply!.headers.subscription, "/temp-queue/rpc");
  });
});

describe("transactions and receipts", () => {
  it("COMMIT delivers the transaction's SENDs; ABORT discards them", async () => {
    const q = "/queue/" + unique("tx");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q });
    c.frame("BEGIN", { transaction: "t1" });
    c.frame("SEND", { destination: q, transaction: "t1" }, "in-tx");
    assert.ok(await c.quiet(150), "nothing before COMMIT");
    c.frame("COMMIT", { transaction: "t1" });
    assert.equal((await messages(c, 1))[0]!.body.toString(), "in-tx");
    c.frame("BEGIN", { transaction: "t2" });
    c.frame("SEND", { destination: q, transaction: "t2" }, "aborted");
    await c.withReceipt("ABORT", { transaction: "t2" });
    assert.ok(await c.quiet(150));
  });

  it("transactional ACK takes effect only on COMMIT", async () => {
    const q = "/queue/" + unique("txack");
    const c = await client();
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: q, ack: "client-individual" });
    c.frame("SEND", { destination: q }, "x");
    const [m] = await messages(c, 1);
    c.frame("BEGIN", { transaction: "t" });
    c.frame("ACK", { id: m!.headers.ack!, transaction: "t" });
    await c.withReceipt("ABORT", { transaction: "t" });
    c.destroy();
    const d = await client();
    await d.withReceipt("SUBSCRIBE", { id: "s", destination: q });
    assert.equal((await messages(d, 1))[0]!.headers.redelivered, "true");
  });

  it("DISCONNECT with receipt: RECEIPT, then the broker closes", async () => {
    const c = await client();
    c.frame("DISCONNECT", { receipt: "bye" });
    const f = await c.next();
    assert.equal(f.command, "RECEIPT");
    assert.equal(f.headers["receipt-id"], "bye");
    await c.waitClosed();
  });
});
