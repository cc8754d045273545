/**
 * A hostile guest cannot hurt the host: an agent endpoint that misbehaves on purpose
 * (fixtures/hostile-agent.ts) against the controller's receiving side (`get`).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { generateControllerKeyPair, privateKeyFromPem } from "@vmc/protocol/signing";
import { TransferClient } from "@vmc/server/transfer/client";
import { TransferError } from "@vmc/server/transfer/errors";
import { startTransferAgent, type TransferAgentProcess } from "./agent-process";
import { partialsUnder, tempDir } from "./util";

const keys = generateControllerKeyPair();
const AGENT = "xfer.hostile.1";

describe("hostile agent", () => {
  const dir = tempDir();
  const outside = join(dir.path, "outside");
  let agent: TransferAgentProcess;
  let client: TransferClient;

  before(async () => {
    mkdirSync(outside);
    process.env.VMC_HOSTILE_OUTSIDE = outside;
    agent = await startTransferAgent({ agentId: AGENT, publicKey: keys.publicKey, script: "test/transfer/fixtures/hostile-agent.ts" });
    client = new TransferClient({ signingKey: privateKeyFromPem(keys.privateKeyPem), deliver: (id, m) => agent.deliver(id, m) });
  });
  after(() => {
    agent?.kill();
    dir.remove();
  });

  /** Everything under the temp dir that is outside `dest`, by name. */
  const strayFiles = (dest: string): string[] => {
    const found: string[] = [];
    const visit = (p: string) => {
      for (const n of readdirSync(p)) {
        const abs = join(p, n);
        if (abs === dest) continue;
        found.push(abs);
        if (statSync(abs, { throwIfNoEntry: false })?.isDirectory() && !abs.startsWith(dest)) visit(abs);
      }
    };
    visit(dir.path);
    return found.filter((f) => !f.includes("/dest-"));
  };

  const cases: [scenario: string, code: TransferError["code"], message: RegExp][] = [
    ["dotdot", "unsafe-path", /'\.\.'/],
    ["dotdot-inner", "unsafe-path", /'\.\.'/],
    ["absolute", "unsafe-path", /absolute/],
    ["symlink-escape", "unsafe-path", /points outside/],
    ["through-symlink", "unsafe-path", /not inside a directory of this transfer/],
    ["size-lies-more", "limit", /more data than the 10 bytes declared/],
    ["size-lies-less", "limit", /65536 bytes sent, 1000000 declared/],
    ["manifest-lies", "limit", /more than the 10 bytes declared/],
    ["endless", "limit", /more data than/],
    ["endless-zero", "limit", /more data than/],
    ["bad-checksum", "checksum", /chunk at offset 65536 failed its SHA-256/],
    ["bad-file-digest", "checksum", /file digest mismatch/],
    ["flood", "limit", /more entries than the 5 declared/],
    ["flood-declared", "limit", /50000000 entries declared, at most 1000/],
    ["huge-frame", "protocol", /exceeds the limit/],
    ["long-name", "unsafe-path", /longer than 255 bytes/],
    ["disk", "limit", /free on the destination/],
    ["stall", "timeout", /no data from the peer/],
    ["device", "protocol", /invalid ENTRY/],
  ];

  for (const [scenario, code, message] of cases) {
    test(`${scenario}: fails with ${code}, writes nothing outside, leaves no partial file`, async () => {
      const dest = join(dir.path, `dest-${scenario}`);
      mkdirSync(dest);
      const err = await client
        .get({ agentId: AGENT, dialEndpoint: agent.endpoint }, `/hostile/${scenario}`, dest, {
          recursive: true,
          chunkSize: 65536,
          idleTimeoutMs: 1500,
          limits: { maxEntries: 1000 },
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err instanceof TransferError, `expected a TransferError, got ${String(err)}`);
      assert.equal(err.code, code, err.message);
      assert.match(err.message, message);
      assert.deepEqual(readdirSync(outside), []);
      assert.deepEqual(strayFiles(dest), [outside]);
      assert.deepEqual(partialsUnder(dir.path), []);
      assert.ok(!existsSync(join(dir.path, "escaped")));
      assert.ok(process.memoryUsage().rss < 1024 * 1024 * 1024, "memory stayed bounded");
    });
  }

  test("setuid bits from a guest are dropped", async () => {
    const dest = join(dir.path, "dest-setuid");
    mkdirSync(dest);
    await client.get({ agentId: AGENT, dialEndpoint: agent.endpoint }, "/hostile/setuid", dest, { chunkSize: 65536 });
    assert.equal(statSync(join(dest, "setuid")).mode & 0o7777, 0o755);
  });

  test("keepPartial keeps the verified prefix of a file whose later chunk is corrupt", async () => {
    const dest = join(dir.path, "dest-keep");
    mkdirSync(dest);
    await assert.rejects(
      client.get({ agentId: AGENT, dialEndpoint: agent.endpoint }, "/hostile/bad-checksum", dest, { chunkSize: 65536, keepPartial: true }),
      (e: TransferError) => e.code === "checksum",
    );
    const partial = join(dest, ".bad-checksum.vmcpart");
    assert.equal(statSync(partial).size, 65536, "only the verified first chunk was written");
  });
});
