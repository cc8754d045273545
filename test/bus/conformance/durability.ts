// Conformance of what outlives a connection or a broker: persistent messages across a restart,
// reply queues that expire when unused (x-expires, auto-delete) and RabbitMQ-style /temp-queue/.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { testIf, type BrokerFixture } from "../fixture";
import { connectStompJs, publishConfirmed, receiptFor, subscribe, type StompJsSession } from "../stompjs-client";

function client(fx: BrokerFixture): Promise<StompJsSession> {
  return connectStompJs(fx.broker(), fx.quirks).then((s) => {
    fx.defer(() => s.vanish());
    return s;
  });
}

export function durabilityConformance(fx: BrokerFixture): void {
  describe("durability and reply queues", () => {
    // Reply queues never carry durable:false: RabbitMQ makes such a queue exclusive to the connection
    // that declared it, and the responder's SEND then fails with resource_locked.
    testIf(fx.quirks.queueExpiryHeaders)("a reply queue with x-expires disappears, with its messages, once unused for that long", async (t) => {
      if (!fx.present(t)) return;
      const cycle = async (expiresMs: number): Promise<string> => {
        const q = fx.dest("/queue/", `reply-${expiresMs}`);
        const args = { "x-expires": String(expiresMs) };
        const requester = await client(fx);
        const first = await subscribe(requester, q, args);
        const gone = receiptFor(requester, `unsub-${expiresMs}`);
        first.subscription!.unsubscribe({ receipt: `unsub-${expiresMs}` });
        await gone;
        await publishConfirmed(await client(fx), q, "left behind", args);
        // The queue's idle lifetime is what is under test: stay away longer than x-expires.
        await new Promise((r) => setTimeout(r, 1000));
        const again = await subscribe(await client(fx), q, args);
        await publishConfirmed(await client(fx), q, "marker", args);
        return (await again.next()).body;
      };
      assert.equal(await cycle(60_000), "left behind", "control: a queue with a long x-expires keeps its message");
      assert.equal(await cycle(300), "marker", "the expired queue still held its message");
    });

    testIf(fx.quirks.queueExpiryHeaders)("a SEND that does not repeat a queue's x-expires gets ERROR precondition_failed and is not delivered", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "inequivalent");
      const inbox = await subscribe(await client(fx), q, { "x-expires": "60000" });
      const { client: responder } = await fx.session();
      responder.send("SEND", { destination: q, receipt: "bare" }, "without args");
      const err = await responder.expect("ERROR");
      assert.match(`${err.headers.message ?? ""} ${err.body.toString()}`, /precondition_failed|inequivalent/i);
      await publishConfirmed(await client(fx), q, "marker", { "x-expires": "60000" });
      assert.equal((await inbox.next()).body, "marker", "the refused SEND was delivered");
    });

    testIf(fx.quirks.queueExpiryHeaders)("an auto-delete queue is deleted, with its messages, when its last subscriber leaves", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "autodelete");
      const args = { "auto-delete": "true" };
      const consumer = await client(fx);
      const inbox = await subscribe(consumer, q, { ...args, ack: "client-individual" });
      await publishConfirmed(await client(fx), q, "unacked at unsubscribe", args);
      assert.equal((await inbox.next()).body, "unacked at unsubscribe");
      const gone = receiptFor(consumer, "unsub-ad");
      inbox.subscription!.unsubscribe({ receipt: "unsub-ad" });
      await gone;
      const again = await subscribe(await client(fx), q, args);
      await publishConfirmed(await client(fx), q, "marker", args);
      assert.equal((await again.next()).body, "marker", "the auto-delete queue survived its last subscriber");
    });

    testIf(fx.quirks.tempQueue)("/temp-queue/ reply-to: the responder sees a private reply destination and the reply comes back", async (t) => {
      if (!fx.present(t)) return;
      const service = fx.dest("/queue/", "svc");
      const responder = await client(fx);
      const requests = await subscribe(responder, service);
      const { client: requester } = await fx.session();
      requester.send("SEND", { destination: service, "reply-to": "/temp-queue/answers" }, "question");
      const req = await requests.next();
      const replyTo = req.headers["reply-to"] ?? "";
      assert.match(replyTo, /^\/reply-queue\//, "reply-to is rewritten to the private queue");
      responder.client.publish({ destination: replyTo, body: "answer" });
      const reply = await requester.expect("MESSAGE");
      assert.equal(reply.body.toString(), "answer");
      assert.equal(reply.headers.subscription, "/temp-queue/answers");
    });

    // Last in the whole suite: it restarts the broker under every other test's feet.
    test("persistent queue messages survive a broker restart, in order", async (t) => {
      if (!fx.present(t)) return;
      const q = fx.dest("/queue/", "persist");
      const producer = await client(fx);
      for (const b of ["d1", "d2", "d3"]) await publishConfirmed(producer, q, b, { persistent: "true" });
      producer.vanish();
      await fx.broker().restart();
      const inbox = await subscribe(await client(fx), q, { ack: "client-individual" });
      const got = await inbox.take(3, 10_000);
      assert.deepEqual(got.map((m) => m.body), ["d1", "d2", "d3"]);
      for (const m of got) m.ack();
    });
  });
}
