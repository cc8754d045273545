/**
 * The bus fallback: the same transfers as frames in binary STOMP bodies through the embedded
 * broker, when the agent's data endpoint is absent or cannot be reached.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { generateControllerKeyPair, privateKeyFromPem } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import { TransferClient } from "@vmc/server/transfer/client";
import { TransferError } from "@vmc/server/transfer/errors";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { startTransferAgent, type TransferAgentProcess } from "./agent-process";
import { listTree, partialsUnder, sha256File, tempDir } from "./util";

const keys = generateControllerKeyPair();
const AGENT = "xfer.bus.1";

describe("bus fallback", () => {
  const dir = tempDir();
  let broker: EmbeddedBroker;
  let agent: TransferAgentProcess;
  let bus: BusClient;
  let client: TransferClient;

  before(async () => {
    broker = await startEmbeddedBroker({ port: await freePort() });
    agent = await startTransferAgent({ agentId: AGENT, publicKey: keys.publicKey, broker: broker.url });
    bus = new BusClient({ brokerUrl: broker.url, name: "xfer-test" });
    await bus.connect(15_000);
    client = new TransferClient({ signingKey: privateKeyFromPem(keys.privateKeyPem), bus });
  });
  after(async () => {
    await bus?.close();
    agent?.kill();
    await broker?.stop();
    dir.remove();
  });

  for (const size of [0, 1, 3 * 1024 * 1024 + 5]) {
    test(`round trip of ${size} bytes over the bus`, async () => {
      const src = join(dir.path, `src-${size}`);
      writeFileSync(src, randomBytes(size));
      const up = await client.put({ agentId: AGENT }, src, join(dir.path, `remote-${size}`));
      assert.equal(up.channel, "bus");
      const back = join(dir.path, `back-${size}`);
      const down = await client.get({ agentId: AGENT }, join(dir.path, `remote-${size}`), back);
      assert.equal(down.channel, "bus");
      assert.equal(await sha256File(back), await sha256File(src));
    });
  }

  test("an unreachable data endpoint falls back to the bus", async () => {
    const src = join(dir.path, "src-1");
    const closed = { host: "127.0.0.1", port: await freePort() };
    const r = await client.put({ agentId: AGENT, dialEndpoint: closed }, src, join(dir.path, "fallback"), { connectTimeoutMs: 2000 });
    assert.equal(r.channel, "bus");
    assert.equal(await sha256File(join(dir.path, "fallback")), await sha256File(src));
    await assert.rejects(client.put({ agentId: AGENT, dialEndpoint: closed }, src, join(dir.path, "x"), { channel: "direct" }), (e: TransferError) => /cannot reach/.test(e.message));
  });

  test("a tree and a 1 GiB sparse file over the bus", async () => {
    const src = join(dir.path, "tree");
    mkdirSync(join(src, "ü"), { recursive: true });
    writeFileSync(join(src, "ü", "a"), randomBytes(100_000));
    symlinkSync("ü/a", join(src, "l"));
    execFileSync("truncate", ["-s", "1G", join(src, "sparse")]);
    await client.put({ agentId: AGENT }, src, join(dir.path, "tree-remote"), { recursive: true });
    await client.get({ agentId: AGENT }, join(dir.path, "tree-remote"), join(dir.path, "tree-back"), { recursive: true });
    assert.deepEqual(listTree(join(dir.path, "tree-back")), listTree(src));
    assert.ok(statSync(join(dir.path, "tree-back", "sparse")).blocks < 64);
    assert.deepEqual(partialsUnder(dir.path), []);
  });
});
