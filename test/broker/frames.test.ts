// Frame-level behaviour of `vmc broker`: version negotiation, escaping, binary bodies, EOL
// styles, and every limit answered with ERROR + close.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { RawClient, type ReceivedFrame } from "./raw-client";

let broker: EmbeddedBroker;
before(async () => {
  broker = await startEmbeddedBroker({ extraArgs: ["--max-body", "65536"] });
});
after(async () => {
  await broker?.stop();
});

async function expectErrorAndClose(c: RawClient, messagePattern: RegExp): Promise<ReceivedFrame> {
  const f = await c.next();
  assert.equal(f.command, "ERROR", `expected ERROR, got ${f.command}`);
  assert.match(f.headers.message ?? "", messagePattern);
  await c.waitClosed();
  return f;
}

describe("version negotiation", () => {
  for (const [accept, expected] of [["1.0,1.1,1.2", "1.2"], ["1.1", "1.1"], ["1.0,1.1", "1.1"], [undefined, "1.0"]] as const) {
    it(`accept-version ${accept ?? "(none)"} → ${expected}`, async () => {
      const c = await RawClient.open(broker.port);
      const headers: Record<string, string> = { login: "guest", passcode: "guest" };
      if (accept) headers["accept-version"] = accept;
      c.frame("CONNECT", headers);
      const f = await c.next();
      assert.equal(f.command, "CONNECTED");
      assert.equal(f.headers.version, expected);
      assert.ok(f.headers.session);
      c.destroy();
    });
  }

  it("STOMP frame works like CONNECT", async () => {
    const c = await RawClient.open(broker.port);
    c.frame("STOMP", { "accept-version": "1.2", host: "/", login: "guest", passcode: "guest" });
    assert.equal((await c.next()).command, "CONNECTED");
    c.destroy();
  });

  it("no common version → ERROR with supported versions, then close", async () => {
    const c = await RawClient.open(broker.port);
    c.frame("CONNECT", { "accept-version": "2.0,3.1", login: "guest", passcode: "guest" });
    const f = await expectErrorAndClose(c, /version/i);
    assert.equal(f.headers.version, "1.0,1.1,1.2");
  });

  it("a frame before CONNECT → ERROR + close", async () => {
    const c = await RawClient.open(broker.port);
    c.frame("SEND", { destination: "/queue/x" }, "hi");
    await expectErrorAndClose(c, /./);
  });
});

describe("escaping and bodies", () => {
  it("1.2 header escapes round-trip through SEND → MESSAGE", async () => {
    const c = await RawClient.login(broker.port);
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: "/queue/esc" });
    c.frame("SEND", { destination: "/queue/esc", "x-tricky": "a\\cb\\nc\\\\d\\re" }, "x");
    const m = await c.next();
    assert.equal(m.command, "MESSAGE");
    assert.equal(m.headers["x-tricky"], "a\\cb\\nc\\\\d\\re", "re-escaped exactly");
    c.destroy();
  });

  it("undefined escape sequence → ERROR", async () => {
    const c = await RawClient.login(broker.port);
    c.frame("SEND", { destination: "/queue/esc2", "x-bad": "a\\tb" }, "x");
    await expectErrorAndClose(c, /header/i);
  });

  it("1.0 does not unescape (backslashes are literal)", async () => {
    const c = await RawClient.open(broker.port);
    c.frame("CONNECT", { login: "guest", passcode: "guest" });
    assert.equal((await c.next()).headers.version, "1.0");
    c.frame("SUBSCRIBE", { id: "s", destination: "/queue/esc10", receipt: "r" });
    assert.equal((await c.next()).command, "RECEIPT");
    c.frame("SEND", { destination: "/queue/esc10", "x-raw": "a\\tb" }, "x");
    const m = await c.next();
    assert.equal(m.headers["x-raw"], "a\\tb");
    assert.ok(m.headers["message-id"], "1.0 MESSAGE carries message-id");
    assert.equal(m.headers.ack, undefined, "no ack header before 1.2");
    c.destroy();
  });

  it("binary body with NUL bytes and content-length arrives intact", async () => {
    const c = await RawClient.login(broker.port);
    await c.withReceipt("SUBSCRIBE", { id: "s", destination: "/queue/bin" });
    const body = Buffer.alloc(40_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    body[0] = 0;
    body[body.length - 1] = 0;
    c.frame("SEND", { destination: "/queue/bin" }, body);
    const m = await c.next();
    assert.equal(m.headers["content-length"], String(body.length));
    assert.ok(m.body.equals(body));
    c.destroy();
  });

  it("CRLF line endings and heart-beat EOLs between frames are accepted", async () => {
    const c = await RawClient.open(broker.port);
    c.raw("\r\n\n\r\nCONNECT\r\naccept-version:1.2\r\nlogin:guest\r\npasscode:guest\r\n\r\n\0\r\n");
    assert.equal((await c.next()).command, "CONNECTED");
    c.raw("SUBSCRIBE\r\nid:1\r\ndestination:/queue/crlf\r\nreceipt:r1\r\n\r\n\0\n\n");
    assert.equal((await c.next()).headers["receipt-id"], "r1");
    c.raw("SEND\r\ndestination:/queue/crlf\r\n\r\nhello\0");
    const m = await c.next();
    assert.equal(m.body.toString(), "hello");
    assert.equal(m.headers.destination, "/queue/crlf");
    c.destroy();
  });

  it("a frame split into single bytes is parsed", async () => {
    const c = await RawClient.login(broker.port);
    const frame = Buffer.from("SUBSCRIBE\nid:1\ndestination:/queue/split\nreceipt:rs\n\n\0");
    for (const b of frame) {
      c.raw(Buffer.of(b));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await c.next()).headers["receipt-id"], "rs");
    c.destroy();
  });
});

describe("limits → ERROR + close", () => {
  it("content-length above --max-body", async () => {
    const c = await RawClient.login(broker.port);
    c.raw("SEND\ndestination:/queue/big\ncontent-length:70000\n\n");
    await expectErrorAndClose(c, /too large/i);
  });

  it("NUL-terminated body above --max-body", async () => {
    const c = await RawClient.login(broker.port);
    c.raw("SEND\ndestination:/queue/big\n\n");
    c.raw(Buffer.alloc(70_000, 0x41));
    await expectErrorAndClose(c, /too large/i);
  });

  it("headers above 64 KiB", async () => {
    const c = await RawClient.login(broker.port);
    c.raw("SEND\ndestination:/queue/big\nx-long:" + "y".repeat(70_000));
    await expectErrorAndClose(c, /too large/i);
  });

  it("too many headers", async () => {
    const c = await RawClient.login(broker.port);
    let head = "SEND\ndestination:/queue/many\n";
    for (let i = 0; i < 300; i++) head += `h${i}:v\n`;
    c.raw(head + "\n\0");
    await expectErrorAndClose(c, /headers/i);
  });

  it("content-length that does not match the NUL", async () => {
    const c = await RawClient.login(broker.port);
    c.raw("SEND\ndestination:/queue/cl\ncontent-length:2\n\nabc\0");
    await expectErrorAndClose(c, /frame/i);
  });

  it("unknown command, header without colon, bad content-length", async () => {
    for (const bad of ["HELLO\n\n\0", "SEND\ndestination /queue/x\n\n\0", "SEND\ndestination:/queue/x\ncontent-length:-3\n\n\0"]) {
      const c = await RawClient.login(broker.port);
      c.raw(bad);
      const f = await expectErrorAndClose(c, /./);
      assert.ok(f.body.length > 0, "ERROR explains itself in the body");
    }
  });

  it("invalid destination", async () => {
    const c = await RawClient.login(broker.port);
    c.frame("SEND", { destination: "/nowhere/x" }, "x");
    await expectErrorAndClose(c, /destination/i);
  });

  it("ERROR carries receipt-id of the offending frame", async () => {
    const c = await RawClient.login(broker.port);
    c.frame("SUBSCRIBE", { id: "a", destination: "/queue/dup" });
    c.frame("SUBSCRIBE", { id: "a", destination: "/queue/dup", receipt: "rx" });
    const f = await expectErrorAndClose(c, /Duplicated subscription/);
    assert.equal(f.headers["receipt-id"], "rx");
  });
});
