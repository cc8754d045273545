// Messaging conformance through @stomp/stompjs, the client VM Controller itself uses: queues and
// topics, ack modes, redelivery, prefetch, expiry, transactions. "Nothing else arrived" is always
// proven with a marker message sent afterwards on the same FIFO queue, never with a sleep.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { testIf, type BrokerFixture } from "../fixture";
import { connectStompJs, publishConfirmed, receiptFor, subscribe, type StompJsSession } from "../stompjs-client";

function client(fx: BrokerFixture, opts: Parameters<typeof connectStompJs>[2] = {}): Promise<StompJsSession> {
  return connectStompJs(fx.broker(), fx.quirks, opts).then((s) => {
    fx.defer(() => s.vanish());
    return s;
  });
}

/** Asserts the MESSAGE frame says it was redelivered, where the broker marks redeliveries. */
function assertRedelivered(fx: BrokerFixture, headers: Record<string, string>): void {
  if (fx.quirks.redeliveredHeader) assert.equal(headers.redelivered, "true", `redelivered header: ${JSON.stringify(headers)}`);
}
function assertFirstDelivery(fx: BrokerFixture, headers: Record<string, string>): void {
  if (fx.quirks.redeliveredHeader) assert.notEqual(headers.redelivered, "true", `redelivered header: ${JSON.stringify(headers)}`);
}

export function messagingConformance(fx: BrokerFixture): void {
  describe("messaging via stompjs", () => {
    test("stompjs connects with each of STOMP 1.0, 1.1 and 1.2", async (t) => {
      if (!fx.present(t)) return;
      for (const v of ["1.0", "1.1", "1.2"]) {
        const s = await client(fx, { versions: [v] });
        assert.equal(s.version, v);
        await s.close();
      }
    });

    test("stompjs gets the broker's ERROR for a wrong passcode", async (t) => {
      if (!fx.present(t)) return;
      await assert.rejects(client(fx, { passcode: "wrong" }), /ERROR/);
    });

    test("SEND → SUBSCRIBE on a queue delivers body and headers", async (t) => {
      if (!fx.present(t)) return;
      const s = await client(fx);
      const q = fx.dest("/queue/", "basic");
      const inbox = await subscribe(s, q);
      s.client.publish({ destination: q, body: '{"type":"HELLO"}', headers: { "content-type": "application/json", "x-corr": "c-1" } });
      const m = await inbox.next();
      assert.equal(m.body, '{"type":"HELLO"}');
      assert.equal(m.headers["content-type"], "application/json");
      assert.equal(m.headers["x-corr"], "c-1");
      assert.equal(m.headers.destination, q);
      assert.ok(m.headers["message-id"]);
    });

    test("a queue keeps messages while nobody consumes, and delivers them in order", async (t) => {
      if (!fx.present(t)) return;
      const s = await client(fx);
      const q = fx.dest("/queue/", "kept");
      for (let i = 0; i < 5; i++) await publishConfirmed(s, q, `m${i}`);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q);
      const got = await inbox.take(5);
      assert.deepEqual(got.map((m) => m.body), ["m0", "m1", "m2", "m3", "m4"]);
    });

    test("competing consumers on a queue: every message delivered exactly once, spread over both", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "compete");
      const [a, b, producer] = [await client(fx), await client(fx), await client(fx)];
      const ia = await subscribe(a, q);
      const ib = await subscribe(b, q);
      const n = 40;
      for (let i = 0; i < n; i++) producer.client.publish({ destination: q, body: `c${i}` });
      const deadline = Date.now() + 10_000;
      while (ia.received.length + ib.received.length < n && Date.now() < deadline) await Promise.race([ia.next(200).catch(() => undefined), ib.next(200).catch(() => undefined)]);
      const bodies = [...ia.received, ...ib.received].map((m) => m.body).sort();
      assert.deepEqual(bodies, Array.from({ length: n }, (_, i) => `c${i}`).sort());
      assert.ok(ia.received.length > 0 && ib.received.length > 0, `split ${ia.received.length}/${ib.received.length}`);
    });

    test("a topic fans out to every subscriber and keeps nothing for later ones", async (t) => {
      if (!fx.present(t)) return;
      const topic = fx.dest("/topic/", "fan");
      const [a, b, producer] = [await client(fx), await client(fx), await client(fx)];
      const ia = await subscribe(a, topic);
      const ib = await subscribe(b, topic);
      for (let i = 0; i < 3; i++) await publishConfirmed(producer, topic, `t${i}`);
      assert.deepEqual((await ia.take(3)).map((m) => m.body), ["t0", "t1", "t2"]);
      assert.deepEqual((await ib.take(3)).map((m) => m.body), ["t0", "t1", "t2"]);
      const late = await subscribe(await client(fx), topic);
      await publishConfirmed(producer, topic, "marker");
      assert.equal((await late.next()).body, "marker", "a late topic subscriber got an old message");
    });

    test("topic wildcards: * matches exactly one word, the rest-wildcard any number", async (t) => {
      if (!fx.present(t)) return;
      const base = fx.dest("/topic/", "wild");
      const [a, b, producer] = [await client(fx), await client(fx), await client(fx)];
      const one = await subscribe(a, `${base}.vm.*`);
      const rest = await subscribe(b, `${base}.${fx.quirks.topicRestWildcard}`);
      for (const key of ["vm.1", "vm.1.2", "other", "vm.marker"]) await publishConfirmed(producer, `${base}.${key}`, key);
      assert.deepEqual((await one.take(2)).map((m) => m.body), ["vm.1", "vm.marker"]);
      assert.deepEqual((await rest.take(4)).map((m) => m.body), ["vm.1", "vm.1.2", "other", "vm.marker"]);
    });

    test("UNSUBSCRIBE stops delivery to that subscription", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "unsub");
      const s = await client(fx);
      const first = await subscribe(s, q);
      const gone = receiptFor(s, "unsub-1");
      first.subscription!.unsubscribe({ receipt: "unsub-1" });
      await gone;
      const second = await subscribe(await client(fx), q);
      for (let i = 0; i < 3; i++) await publishConfirmed(s, q, `u${i}`);
      assert.deepEqual((await second.take(3)).map((m) => m.body), ["u0", "u1", "u2"]);
      assert.equal(first.received.length, 0, "a cancelled subscription still received messages");
    });

    test("ack auto: a delivered message is gone even if the consumer disconnects", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "auto");
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "auto" });
      const producer = await client(fx);
      await publishConfirmed(producer, q, "once");
      assert.equal((await inbox.next()).body, "once");
      await consumer.close();
      await publishConfirmed(producer, q, "marker");
      const again = await subscribe(await client(fx), q);
      assert.equal((await again.next()).body, "marker");
    });

    test("ack client-individual: the acked message is gone, the unacked one is redelivered (redelivered:true) when the consumer goes away", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "individual");
      const producer = await client(fx);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "client-individual" });
      await publishConfirmed(producer, q, "acked");
      await publishConfirmed(producer, q, "unacked");
      const [m1, m2] = await inbox.take(2);
      assert.equal(m1!.body, "acked");
      assertFirstDelivery(fx, m1!.headers);
      m1!.ack();
      assert.equal(m2!.body, "unacked");
      // The ACK is on the wire before the disconnect: a DISCONNECT with receipt flushes it.
      await consumer.close();
      const next = await subscribe(await client(fx), q, { ack: "client-individual" });
      const re = await next.next();
      assert.equal(re.body, "unacked");
      assertRedelivered(fx, re.headers);
      re.ack();
    });

    test("an unacking consumer that vanishes (no DISCONNECT) gets its messages redelivered to another", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "vanish");
      const producer = await client(fx);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "client-individual" });
      await publishConfirmed(producer, q, "in-flight");
      assert.equal((await inbox.next()).body, "in-flight");
      consumer.vanish();
      const other = await subscribe(await client(fx), q, { ack: "client-individual" });
      const re = await other.next(10_000);
      assert.equal(re.body, "in-flight");
      assertRedelivered(fx, re.headers);
    });

    test("ack client is cumulative: ACK of the second message acks the first too, not the third", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "cumulative");
      const producer = await client(fx);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "client" });
      for (const b of ["k1", "k2", "k3"]) await publishConfirmed(producer, q, b);
      const [, m2, m3] = await inbox.take(3);
      assert.equal(m3!.body, "k3");
      m2!.ack();
      await consumer.close();
      const next = await subscribe(await client(fx), q, { ack: "client-individual" });
      const re = await next.next();
      assert.equal(re.body, "k3", "only the message after the cumulative ACK comes back");
      assertRedelivered(fx, re.headers);
      re.ack();
      await publishConfirmed(producer, q, "marker");
      assert.equal((await next.next()).body, "marker");
    });

    testIf(fx.quirks.nackRequeues)("NACK gives the message back for redelivery with redelivered:true", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "nack");
      const producer = await client(fx);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "client-individual" });
      await publishConfirmed(producer, q, "refused once");
      const m = await inbox.next();
      assertFirstDelivery(fx, m.headers);
      m.nack();
      const re = await inbox.next(10_000, "the redelivery after NACK");
      assert.equal(re.body, "refused once");
      assertRedelivered(fx, re.headers);
      re.ack();
    });

    testIf(fx.quirks.prefetchCount)("prefetch-count 1: a consumer holding an unacked message gets no more until it acks", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "prefetch");
      const producer = await client(fx);
      const slow = await client(fx);
      const holding = await subscribe(slow, q, { ack: "client-individual", "prefetch-count": "1" });
      await publishConfirmed(producer, q, "p1");
      const held = await holding.next();
      assert.equal(held.body, "p1");
      const fast = await subscribe(await client(fx), q, { ack: "client-individual", "prefetch-count": "10" });
      for (const b of ["p2", "p3", "p4"]) await publishConfirmed(producer, q, b);
      const got = await fast.take(3);
      assert.deepEqual(got.map((m) => m.body), ["p2", "p3", "p4"], "the saturated consumer was given more messages");
      assert.equal(holding.pending, 0);
      for (const m of got) m.ack();
      held.ack();
    });

    test("an expired message (expiration header) is not delivered", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "expiry");
      const producer = await client(fx);
      const { header, absolute } = fx.quirks.expiry;
      const expiresIn = (ms: number): Record<string, string> => ({ [header]: String(absolute ? Date.now() + ms : ms) });
      await publishConfirmed(producer, q, "stale", expiresIn(100));
      await publishConfirmed(producer, q, "kept", expiresIn(600_000));
      // Expiry is the behaviour under test: let the 100 ms TTL run out.
      await new Promise((r) => setTimeout(r, 400));
      const inbox = await subscribe(await client(fx), q);
      assert.equal((await inbox.next()).body, "kept", "the expired message was delivered");
    });

    test("transactions: SENDs in a transaction are delivered only on COMMIT, ABORT discards them", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "tx");
      const producer = await client(fx);
      const inbox = await subscribe(await client(fx), q);
      const tx = producer.client.begin("tx-commit");
      producer.client.publish({ destination: q, body: "in-tx-1", headers: { transaction: tx.id } });
      producer.client.publish({ destination: q, body: "in-tx-2", headers: { transaction: tx.id } });
      await publishConfirmed(producer, q, "outside");
      assert.equal((await inbox.next()).body, "outside", "a transactional SEND was delivered before COMMIT");
      const committed = receiptFor(producer, "commit-1");
      producer.client.commit(tx.id);
      producer.client.publish({ destination: q, body: "after-commit", headers: { receipt: "commit-1" } });
      await committed;
      assert.deepEqual((await inbox.take(3)).map((m) => m.body), ["in-tx-1", "in-tx-2", "after-commit"]);

      const aborted = producer.client.begin("tx-abort");
      producer.client.publish({ destination: q, body: "discarded", headers: { transaction: aborted.id } });
      aborted.abort();
      await publishConfirmed(producer, q, "marker");
      assert.equal((await inbox.next()).body, "marker", "an aborted SEND was delivered");
    });

    test("ACK inside a transaction takes effect on COMMIT", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "txack");
      const producer = await client(fx);
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ack: "client-individual" });
      await publishConfirmed(producer, q, "tx-acked");
      const m = await inbox.next();
      const tx = consumer.client.begin("tx-ack");
      m.ack({ transaction: tx.id });
      tx.commit();
      await consumer.close();
      await publishConfirmed(producer, q, "marker");
      const again = await subscribe(await client(fx), q);
      assert.equal((await again.next()).body, "marker", "a message ACKed in a committed transaction came back");
    });

    test("binary bodies go through stompjs byte for byte", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "stompjs-binary");
      const s = await client(fx);
      const inbox = await subscribe(s, q);
      const body = new Uint8Array(4096).map((_, i) => (i * 31) & 0xff);
      s.client.publish({ destination: q, binaryBody: body, headers: { "content-type": "application/octet-stream" } });
      const m = await inbox.next();
      assert.deepEqual(Buffer.from(m.binaryBody), Buffer.from(body));
    });
  });
}
