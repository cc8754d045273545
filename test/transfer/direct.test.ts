/**
 * Transfers over the direct data channel with the agent-side module in its own process:
 * round trips, trees, sparse 1 GiB, resume after the agent is killed, cancel, token rules.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { generateControllerKeyPair, privateKeyFromPem, signMessage } from "@vmc/protocol/signing";
import type { XferGrant } from "@vmc/protocol/bus";
import { FrameType, OpenFrame } from "@vmc/protocol/transfer";
import { TransferClient } from "@vmc/server/transfer/client";
import { TransferError } from "@vmc/server/transfer/errors";
import { jsonPayload, SocketFrameChannel } from "@vmc/server/transfer/frames";
import { startTransferAgent, type TransferAgentProcess } from "./agent-process";
import { eventually, listTree, partialsUnder, sha256File, tempDir } from "./util";

const keys = generateControllerKeyPair();
const signingKey = privateKeyFromPem(keys.privateKeyPem);
const AGENT = "xfer.direct.1";

describe("direct data channel", () => {
  const dir = tempDir();
  let agent: TransferAgentProcess;
  let client: TransferClient;
  const target = () => ({ agentId: AGENT, dialEndpoint: agent.endpoint });
  const restart = async () => {
    agent = await startTransferAgent({ agentId: AGENT, publicKey: keys.publicKey, args: ["--grant-wait-ms", "1500"] });
    client = new TransferClient({ signingKey, deliver: (id, m) => agent.deliver(id, m) });
  };

  before(restart);
  after(() => {
    agent?.kill();
    dir.remove();
  });

  for (const size of [0, 1, 1024 * 1024 + 7]) {
    test(`round trip of ${size} bytes keeps content, mode and mtime`, async () => {
      const src = join(dir.path, `src-${size}`);
      writeFileSync(src, randomBytes(size));
      chmodSync(src, 0o640);
      utimesSync(src, new Date(), new Date(1_600_000_000_000));
      const remote = join(dir.path, `remote-${size}`);
      const up = await client.put(target(), src, remote);
      assert.equal(up.channel, "direct");
      assert.equal(up.bytes, size);
      const back = join(dir.path, `back-${size}`);
      const down = await client.get(target(), remote, back);
      assert.equal(down.bytes, size);
      assert.equal(await sha256File(back), await sha256File(src));
      assert.equal(statSync(back).mode & 0o777, 0o640);
      assert.equal(Math.floor(statSync(back).mtimeMs), 1_600_000_000_000);
      assert.deepEqual(partialsUnder(dir.path), []);
    });
  }

  test("1 GiB sparse file both ways stays sparse and identical", async () => {
    const src = join(dir.path, "sparse-src");
    execFileSync("truncate", ["-s", "1G", src]);
    const remote = join(dir.path, "sparse-remote");
    const up = await client.put(target(), src, remote);
    assert.equal(up.bytes, 1024 ** 3);
    assert.equal(up.bytesSent, 0, "holes travel as ZERO frames");
    const back = join(dir.path, "sparse-back");
    await client.get(target(), remote, back);
    assert.equal(statSync(back).size, 1024 ** 3);
    assert.ok(statSync(back).blocks < 64, "the copy is sparse too");
  });

  test("sparse file with data inside is reproduced byte for byte", async () => {
    const src = join(dir.path, "holey");
    execFileSync("truncate", ["-s", "9M", src]);
    const fd = randomBytes(1000);
    execFileSync("dd", [`of=${src}`, "bs=1", "seek=5000000", "conv=notrunc", "status=none"], { input: fd });
    const back = join(dir.path, "holey-back");
    await client.put(target(), src, join(dir.path, "holey-remote"));
    await client.get(target(), join(dir.path, "holey-remote"), back);
    assert.equal(await sha256File(back), await sha256File(src));
  });

  test("a tree keeps modes, mtimes, symlinks and unicode names", async () => {
    const src = join(dir.path, "tree");
    mkdirSync(join(src, "sub", "déjà vu"), { recursive: true });
    writeFileSync(join(src, "sub", "déjà vu", "日本語.txt"), "こんにちは");
    writeFileSync(join(src, "run.sh"), "#!/bin/sh\necho hi\n");
    chmodSync(join(src, "run.sh"), 0o755);
    writeFileSync(join(src, "empty"), "");
    symlinkSync("sub/déjà vu/日本語.txt", join(src, "link"));
    symlinkSync("/etc/hostname", join(src, "abs-link"));
    chmodSync(join(src, "sub"), 0o750);
    utimesSync(join(src, "sub"), new Date(), new Date(1_500_000_000_000));
    utimesSync(join(src, "run.sh"), new Date(), new Date(1_400_000_000_000));
    const remoteParent = join(dir.path, "remote-trees");
    mkdirSync(remoteParent);
    const up = await client.put(target(), src, remoteParent, { recursive: true });
    assert.equal(up.entries, 8);
    assert.deepEqual(listTree(join(remoteParent, "tree")), listTree(src));
    // Back to the host: the absolute link is refused by default (data from a guest) ...
    await assert.rejects(client.get(target(), join(remoteParent, "tree"), join(dir.path, "tree-back-strict"), { recursive: true }), (e: TransferError) => e.code === "unsafe-path");
    // ... and kept when the caller allows it.
    const back = join(dir.path, "tree-back");
    await client.get(target(), join(remoteParent, "tree"), back, { recursive: true, limits: { allowEscapingSymlinks: true } });
    assert.deepEqual(listTree(back), listTree(src));
    assert.equal(readFileSync(join(back, "link"), "utf8"), "こんにちは");
  });

  test("a directory without -r is refused", async () => {
    await assert.rejects(client.put(target(), join(dir.path, "tree"), join(dir.path, "x")), /directory \(copy it with -r\)/);
  });

  test("resume after the agent is killed midway (get, then put)", async () => {
    const src = join(dir.path, "resume-src");
    writeFileSync(src, randomBytes(64 * 1024 * 1024));
    const remote = join(dir.path, "resume-remote");
    await client.put(target(), src, remote);

    // get: kill the agent once a third has arrived; the host keeps its verified prefix
    const back = join(dir.path, "resume-back");
    let killed = false;
    await assert.rejects(
      client.get(target(), remote, back, {
        keepPartial: true,
        chunkSize: 256 * 1024,
        onProgress: (p) => {
          if (!killed && p.bytesDone > 0 && p.bytesDone < p.bytesTotal) {
            killed = true;
            agent.kill();
          }
        },
      }),
      (e: TransferError) => e instanceof TransferError,
    );
    assert.ok(killed);
    const partial = join(dir.path, ".resume-back.vmcpart");
    assert.ok(existsSync(partial), "partial kept");
    const kept = statSync(partial).size;
    assert.ok(kept > 0 && kept < 64 * 1024 * 1024);
    await agent.exited;
    await restart();
    const resumed = await client.get(target(), remote, back, { resume: true, chunkSize: 256 * 1024 });
    assert.ok(resumed.bytesSent <= 64 * 1024 * 1024 - kept + 256 * 1024, `moved only the rest (${resumed.bytesSent})`);
    assert.equal(await sha256File(back), await sha256File(src));
    assert.ok(!existsSync(partial));

    // put: the agent is the receiver; SIGKILL leaves its partial file, the next put resumes it
    const remote2 = join(dir.path, "resume-remote2");
    killed = false;
    await assert.rejects(
      client.put(target(), src, remote2, {
        keepPartial: true,
        chunkSize: 256 * 1024,
        onProgress: (p) => {
          if (!killed && p.bytesDone > 0 && p.bytesDone < p.bytesTotal) {
            killed = true;
            agent.kill();
          }
        },
      }),
    );
    await agent.exited;
    await restart();
    const up = await client.put(target(), src, remote2, { resume: true, chunkSize: 256 * 1024 });
    assert.ok(up.bytesSent < 64 * 1024 * 1024, `resumed put moved ${up.bytesSent}`);
    assert.equal(await sha256File(remote2), await sha256File(src));
  });

  test("cancel stops the transfer and removes partial files on both sides", async () => {
    const src = join(dir.path, "resume-src");
    const ac = new AbortController();
    const remote = join(dir.path, "cancel-remote");
    await assert.rejects(
      client.put(target(), src, remote, {
        chunkSize: 64 * 1024,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.bytesDone > 0) ac.abort();
        },
      }),
      (e: TransferError) => e.code === "cancelled",
    );
    await eventually(() => !existsSync(join(dir.path, ".cancel-remote.vmcpart")), 5000, "the agent to remove its partial file");
    assert.ok(!existsSync(remote));

    const ac2 = new AbortController();
    const back = join(dir.path, "cancel-back");
    await assert.rejects(
      client.get(target(), src, back, { chunkSize: 64 * 1024, signal: ac2.signal, onProgress: (p) => p.bytesDone > 0 && ac2.abort() }),
      (e: TransferError) => e.code === "cancelled",
    );
    assert.ok(!existsSync(join(dir.path, ".cancel-back.vmcpart")));
    assert.ok(!existsSync(back));
  });

  test("progress reports bytes, rate and ETA", async () => {
    const seen: { bytesDone: number; rate: number; etaMs: number | null }[] = [];
    await client.get(target(), join(dir.path, "resume-src"), join(dir.path, "progress-back"), { onProgress: (p) => seen.push(p) });
    const last = seen.at(-1)!;
    assert.equal(last.bytesDone, 64 * 1024 * 1024);
    assert.equal(last.etaMs, 0);
    assert.ok(seen.some((p) => p.rate > 0));
  });

  describe("tokens", () => {
    const grant = (over: Partial<XferGrant> = {}) =>
      signMessage(
        {
          type: "XFER_GRANT" as const,
          transferId: randomBytes(18).toString("base64url"),
          agentId: AGENT,
          direction: "get" as const,
          path: join(dir.path, "src-1"),
          recursive: false,
          resume: false,
          keepPartial: false,
          chunkSize: 65536,
          token: randomBytes(32).toString("base64url"),
          channel: "direct" as const,
          replyTo: "/topic/none",
          issuedAt: Date.now(),
          expiresAt: Date.now() + 60_000,
          ...over,
        },
        signingKey,
      );
    /** Presents a token; resolves with the first frame type or the error message. */
    const present = async (g: XferGrant): Promise<string> => {
      const socket = connect(agent.endpoint);
      await new Promise((r) => socket.once("connect", r));
      const ch = new SocketFrameChannel(socket);
      await ch.send(FrameType.OPEN, jsonPayload({ version: 1, transferId: g.transferId, token: g.token } satisfies OpenFrame));
      const f = await ch.next(15_000);
      ch.destroy();
      return f.type === FrameType.ACCEPT ? "ACCEPT" : f.payload.toString();
    };

    test("a token works once", async () => {
      const g = grant();
      await agent.deliver(AGENT, g);
      assert.equal(await present(g), "ACCEPT");
      assert.match(await present(g), /already used/);
    });

    test("a grant not signed by the controller is refused", async () => {
      const other = privateKeyFromPem(generateControllerKeyPair().privateKeyPem);
      const g = signMessage({ ...grant(), signature: undefined }, other) as XferGrant;
      await agent.deliver(AGENT, g);
      assert.match(await present({ ...g }), /unknown token/);
      await eventually(() => agent.stderr().includes(`grant ${g.transferId} refused: bad signature`), 5000, "the refusal in the agent's log");
    });

    test("a grant for another agent, an expired one, a tampered one, a replayed one are refused", async () => {
      const used = grant();
      await agent.deliver(AGENT, used);
      assert.equal(await present(used), "ACCEPT");
      const cases: [XferGrant, string][] = [
        [grant({ agentId: "someone.else" }), "grant is for agent someone.else"],
        [grant({ expiresAt: Date.now() - 1 }), "grant expired"],
        [{ ...grant(), path: "/etc/shadow" }, "bad signature"],
        [{ ...used, token: randomBytes(32).toString("base64url") }, "bad signature"],
        [used, "grant replayed"],
      ];
      for (const [g, reason] of cases) {
        await agent.deliver(AGENT, g);
        await eventually(() => agent.stderr().includes(`grant ${g.transferId} refused: ${reason}`), 5000, `refusal '${reason}'`);
      }
      assert.match(await present(cases[0]![0]), /unknown token/);
    });
  });
});
