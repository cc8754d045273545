// Authentication (users file, RabbitMQ's loopback-only guest default) and heart-beat
// negotiation and enforcement.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { RawClient } from "./raw-client";

const brokers: EmbeddedBroker[] = [];
const dirs: string[] = [];
after(async () => {
  for (const b of brokers) await b.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function refused(port: number, headers: Record<string, string>, host = "127.0.0.1"): Promise<string> {
  const c = await RawClient.open(port, host);
  c.frame("CONNECT", { "accept-version": "1.2", ...headers });
  const f = await c.next();
  assert.equal(f.command, "ERROR", `expected ERROR for ${JSON.stringify(headers)}`);
  await c.waitClosed();
  return f.body.toString();
}

describe("authentication", () => {
  it("users file: listed users only; wrong or missing credentials refused with ERROR + close", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vmc-users-"));
    dirs.push(dir);
    const file = join(dir, "users.json");
    writeFileSync(file, JSON.stringify({ users: [{ login: "alice", passcode: "s3:cr\\et" }] }));
    const b = await startEmbeddedBroker({ usersFile: file });
    brokers.push(b);
    const ok = await RawClient.open(b.port);
    // CONNECT headers are never unescaped: the passcode is sent literally.
    ok.frame("CONNECT", { "accept-version": "1.2", login: "alice", passcode: "s3:cr\\et" });
    assert.equal((await ok.next()).command, "CONNECTED");
    ok.destroy();
    assert.match(await refused(b.port, { login: "alice", passcode: "wrong" }), /alice/);
    assert.match(await refused(b.port, { login: "guest", passcode: "guest" }), /guest/);
    await refused(b.port, {});
  });

  it("no users file: guest/guest from loopback; other credentials, or none, refused", async () => {
    const b = await startEmbeddedBroker();
    brokers.push(b);
    const c = await RawClient.login(b.port);
    c.destroy();
    await refused(b.port, { login: "guest", passcode: "nope" });
    await refused(b.port, { login: "bob", passcode: "guest" });
    assert.match(await refused(b.port, {}), /login/);
  });

  it("no users file: guest is refused from a non-loopback address", async (t) => {
    const address = Object.values(networkInterfaces()).flat().find((i) => i && i.family === "IPv4" && !i.internal)?.address;
    if (!address) {
      t.skip("this machine has no non-loopback IPv4 address to connect from");
      return;
    }
    const b = await startEmbeddedBroker({ extraArgs: ["--host", "0.0.0.0"] });
    brokers.push(b);
    assert.match(await refused(b.port, { login: "guest", passcode: "guest" }, address), /localhost/);
  });
});

describe("heart-beats", () => {
  it("negotiates and sends heart-beats at the interval the client asked for", async () => {
    const b = await startEmbeddedBroker();
    brokers.push(b);
    const c = await RawClient.open(b.port);
    c.frame("CONNECT", { "accept-version": "1.2", login: "guest", passcode: "guest", "heart-beat": "0,200" });
    const f = await c.next();
    assert.equal(f.headers["heart-beat"], "200,0");
    const deadline = Date.now() + 3000;
    while (c.heartbeats < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(c.heartbeats >= 3, `got ${c.heartbeats} heart-beats`);
    c.destroy();
  });

  it("closes a connection that goes silent past the negotiated interval, keeps one that beats", async () => {
    const b = await startEmbeddedBroker();
    brokers.push(b);
    const silent = await RawClient.open(b.port);
    silent.frame("CONNECT", { "accept-version": "1.2", login: "guest", passcode: "guest", "heart-beat": "500,0" });
    assert.equal((await silent.next()).headers["heart-beat"], "0,500");
    const beating = await RawClient.open(b.port);
    beating.frame("CONNECT", { "accept-version": "1.2", login: "guest", passcode: "guest", "heart-beat": "500,0" });
    await beating.next();
    const timer = setInterval(() => beating.raw("\n"), 150);
    try {
      const started = Date.now();
      await silent.waitClosed(5000);
      const took = Date.now() - started;
      assert.ok(took >= 500, `closed after ${took} ms: too early`);
      assert.equal(beating.closed, false, "the connection sending heart-beats stays open");
      await beating.withReceipt("SUBSCRIBE", { id: "s", destination: "/queue/hb" });
    } finally {
      clearInterval(timer);
      beating.destroy();
    }
  });

  it("closes a connection that never sends CONNECT", async () => {
    const b = await startEmbeddedBroker({ extraArgs: ["--connect-timeout", "300"] });
    brokers.push(b);
    const c = await RawClient.open(b.port);
    c.raw("CONN");
    const f = await c.next(3000);
    assert.equal(f.command, "ERROR");
    await c.waitClosed();
  });
});
