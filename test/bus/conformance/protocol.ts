// Frame-level conformance: connection negotiation, authentication, heart-beats, errors, receipts,
// header escaping and binary bodies, written byte for byte so every broker sees the same frames.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { testIf, type BrokerFixture } from "../fixture";

export function protocolConformance(fx: BrokerFixture): void {
  describe("STOMP frames", () => {
    test("CONNECT negotiates the highest common version and answers CONNECTED", async (t) => {
      if (!fx.present(t)) return;
      const all = await fx.session({ "accept-version": "1.0,1.1,1.2" });
      assert.equal(all.connected.headers.version, "1.2");
      const v11 = await fx.session({ "accept-version": "1.1" });
      assert.equal(v11.connected.headers.version, "1.1");
    });

    test("the STOMP command connects like CONNECT", async (t) => {
      if (!fx.present(t)) return;
      const s = await fx.session({}, "STOMP");
      assert.equal(s.connected.command, "CONNECTED");
      assert.equal(s.connected.headers.version, "1.2");
    });

    test("a CONNECT without accept-version speaks STOMP 1.0: SUBSCRIBE without id, MESSAGE delivered", async (t) => {
      if (!fx.present(t)) return;
      const { client, connected } = await fx.session({ "accept-version": "" });
      assert.ok(connected.headers.version === undefined || connected.headers.version === "1.0", `version ${connected.headers.version}`);
      client.unescape = false;
      const q = fx.dest("/queue/", "v10");
      client.send("SUBSCRIBE", { destination: q, receipt: "sub" });
      await client.expect("RECEIPT");
      client.send("SEND", { destination: q }, "hello 1.0");
      const m = await client.expect("MESSAGE");
      assert.equal(m.headers.destination, q);
      assert.equal(m.body.toString(), "hello 1.0");
      assert.ok(m.headers["message-id"]);
    });

    test("wrong credentials are refused with ERROR, nothing else is served, and the connection is closed", async (t) => {
      if (!fx.present(t)) return;
      const refused = async (login: string, passcode: string): Promise<void> => {
        const c = await fx.raw();
        c.send("CONNECT", { "accept-version": "1.2", host: "/", login, passcode });
        assert.equal((await c.next()).command, "ERROR", `${login}/${passcode}`);
        c.send("SUBSCRIBE", { destination: fx.dest("/queue/", "auth"), id: "s", receipt: "after-refusal" });
        const closed = await c.closesWithin(fx.quirks.authErrorCloseMs);
        assert.ok(closed, `connection for ${login} still open ${fx.quirks.authErrorCloseMs} ms after the authentication ERROR`);
        assert.ok(!c.frames.some((f) => f.command === "RECEIPT"), "a frame was served after the refused CONNECT");
      };
      await Promise.all([refused("guest", "not-the-passcode"), refused("nobody-here", "guest")]);
    });

    test("a CONNECT without credentials is refused, or accepted as the documented default user", async (t) => {
      if (!fx.present(t)) return;
      const c = await fx.raw();
      c.send("CONNECT", { "accept-version": "1.2", host: "/" });
      const reply = await c.next();
      if (fx.quirks.anonymousConnectAs) {
        assert.equal(reply.command, "CONNECTED", `${fx.target.name} documents a default user`);
      } else {
        assert.equal(reply.command, "ERROR");
        assert.ok(await c.closesWithin(5000));
      }
    });

    test("a frame other than CONNECT on a fresh connection gets an ERROR", async (t) => {
      if (!fx.present(t)) return;
      const c = await fx.raw();
      c.send("SEND", { destination: fx.dest("/queue/", "early") }, "too early");
      assert.equal((await c.next()).command, "ERROR");
      if (fx.quirks.errorClosesConnection) assert.ok(await c.closesWithin(5000), "ERROR must be followed by a close");
    });

    test("an unknown command gets an ERROR with a message header", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      client.send("FLY", { destination: "/queue/x" });
      const err = await client.expect("ERROR");
      assert.ok(err.headers.message, "ERROR carries a message header");
      if (fx.quirks.errorClosesConnection) assert.ok(await client.closesWithin(5000), "ERROR must be followed by a close");
    });

    test("heart-beats: asked for, the broker sends them at the negotiated period", async (t) => {
      if (!fx.present(t)) return;
      const { client, connected } = await fx.session({ "heart-beat": "0,200" });
      const [sx] = (connected.headers["heart-beat"] ?? "0,0").split(",").map(Number);
      assert.ok(sx !== undefined && sx >= 200, `CONNECTED heart-beat ${connected.headers["heart-beat"]} must offer ≥ 200 ms broker→client`);
      // At least one heart-beat per negotiated period (sending more often is allowed).
      await client.heartbeatsReach(client.heartbeats + 3, sx * 3 + 2000);
    });

    test("heart-beats: a client that promised heart-beats and goes silent is disconnected", async (t) => {
      if (!fx.present(t)) return;
      const { client, connected } = await fx.session({ "heart-beat": "200,0" });
      const [, sy] = (connected.headers["heart-beat"] ?? "0,0").split(",").map(Number);
      assert.ok(sy !== undefined && sy >= 200, `CONNECTED heart-beat ${connected.headers["heart-beat"]} must expect client heart-beats`);
      assert.ok(await client.closesWithin(sy * 4 + 2000), "a silent client was not disconnected");
    });

    test("heart-beats: a client that keeps sending them stays connected", async (t) => {
      if (!fx.present(t)) return;
      // A 1 s promise beaten every 250 ms: a stalled test process (loaded CI) must not look silent.
      const { client, connected } = await fx.session({ "heart-beat": "1000,0" });
      const [, sy] = (connected.headers["heart-beat"] ?? "0,0").split(",").map(Number);
      const beat = setInterval(() => client.write("\n"), 250);
      fx.defer(() => clearInterval(beat));
      // Stay connected for three enforcement periods, then prove the session still works.
      const closed = await client.closesWithin((sy || 1000) * 3);
      assert.equal(closed, false, "a client sending heart-beats was disconnected");
      client.send("SUBSCRIBE", { destination: fx.dest("/queue/", "hb"), id: "s", receipt: "alive" });
      assert.equal((await client.expect("RECEIPT")).headers["receipt-id"], "alive");
    });

    test("receipts answer SUBSCRIBE, SEND and UNSUBSCRIBE with the same receipt-id", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      const q = fx.dest("/queue/", "receipts");
      client.send("SUBSCRIBE", { destination: q, id: "s1", receipt: "r-sub" });
      assert.equal((await client.expect("RECEIPT")).headers["receipt-id"], "r-sub");
      client.send("SEND", { destination: q, receipt: "r-send" }, "x");
      assert.equal((await client.next((f) => f.command === "RECEIPT", 5000, "RECEIPT r-send")).headers["receipt-id"], "r-send");
      await client.expect("MESSAGE");
      client.send("UNSUBSCRIBE", { id: "s1", receipt: "r-unsub" });
      assert.equal((await client.expect("RECEIPT")).headers["receipt-id"], "r-unsub");
    });

    test("DISCONNECT with a receipt gets the RECEIPT, then the broker closes the connection", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      client.send("DISCONNECT", { receipt: "bye-1" });
      assert.equal((await client.expect("RECEIPT")).headers["receipt-id"], "bye-1");
      assert.ok(await client.closesWithin(5000), "still open after DISCONNECT");
    });

    test("STOMP 1.2 header escaping: \\c \\n \\r \\\\ round-trip through a custom header", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      const q = fx.dest("/queue/", "escape");
      client.send("SUBSCRIBE", { destination: q, id: "s1", receipt: "sub" });
      await client.expect("RECEIPT");
      const value = "a:b\nc\\d\re:f";
      client.send("SEND", { destination: q, "x-odd": value }, "escaped");
      const m = await client.expect("MESSAGE");
      assert.equal(m.headers["x-odd"], value);
      assert.equal(m.body.toString(), "escaped");
    });

    test("repeated headers: the first occurrence wins", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      const q = fx.dest("/queue/", "repeat");
      client.send("SUBSCRIBE", { destination: q, id: "s1", receipt: "sub" });
      await client.expect("RECEIPT");
      client.send("SEND", [["destination", q], ["x-first", "one"], ["x-first", "two"]], "r");
      const m = await client.expect("MESSAGE");
      assert.equal(m.headers["x-first"], "one");
    });

    test("binary bodies with content-length keep every byte, NULs included", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      const q = fx.dest("/queue/", "binary");
      client.send("SUBSCRIBE", { destination: q, id: "s1", receipt: "sub" });
      await client.expect("RECEIPT");
      const body = Buffer.alloc(64 * 1024);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
      body[0] = 0;
      body[body.length - 1] = 0;
      client.send("SEND", { destination: q, "content-type": "application/octet-stream" }, body, { contentLength: true });
      const m = await client.expect("MESSAGE", 10_000);
      assert.equal(m.headers["content-length"], String(body.length));
      assert.ok(m.body.equals(body), "body bytes differ");
    });

    test("a body without content-length ends at the first NUL", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      const q = fx.dest("/queue/", "nul");
      client.send("SUBSCRIBE", { destination: q, id: "s1", receipt: "sub" });
      await client.expect("RECEIPT");
      client.write(Buffer.from(`SEND\ndestination:${q}\n\nfirst\0SEND\ndestination:${q}\n\nsecond\0`));
      assert.equal((await client.expect("MESSAGE")).body.toString(), "first");
      assert.equal((await client.expect("MESSAGE")).body.toString(), "second");
    });

    testIf(fx.quirks.rejectsUnknownDestinationTypes)("a subscription to an unsupported destination type gets an ERROR", async (t) => {
      if (!fx.present(t)) return;
      const { client } = await fx.session();
      client.send("SUBSCRIBE", { destination: "/nowhere/at-all", id: "s1" });
      assert.equal((await client.expect("ERROR")).command, "ERROR");
      if (fx.quirks.errorClosesConnection) assert.ok(await client.closesWithin(5000), "ERROR must be followed by a close");
    });
  });
}
