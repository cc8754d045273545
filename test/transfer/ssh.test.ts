/** Agentless transfers over real SSH/SFTP (Debian's openssh-server on a loopback port). */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { TransferError } from "@vmc/server/transfer/errors";
import { SshTransfer } from "@vmc/server/transfer/ssh";
import { requireComponent } from "../harness/components";
import { sshdInstalled, startSshd, type Sshd } from "./sshd";
import { listTree, partialsUnder, sha256File, tempDir } from "./util";

describe("agentless transfer over SSH", () => {
  const dir = tempDir();
  let sshd: Sshd | undefined;
  let ssh: SshTransfer;

  before(async () => {
    if (!sshdInstalled()) return;
    sshd = await startSshd();
    ssh = await SshTransfer.connect({ host: sshd.host, port: sshd.port, username: sshd.username, privateKeyPath: sshd.keyPath });
  });
  after(async () => {
    ssh?.dispose();
    await sshd?.stop();
    dir.remove();
  });

  for (const size of [0, 1, 1024 * 1024]) {
    test(`round trip of ${size} bytes`, async (t) => {
      if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
      const src = join(dir.path, `src-${size}`);
      writeFileSync(src, randomBytes(size));
      chmodSync(src, 0o604);
      utimesSync(src, new Date(), new Date(1_600_000_000_000));
      const up = await ssh.put(src, join(dir.path, `remote-${size}`));
      assert.equal(up.bytes, size);
      await ssh.get(join(dir.path, `remote-${size}`), join(dir.path, `back-${size}`));
      assert.equal(await sha256File(join(dir.path, `back-${size}`)), await sha256File(src));
      assert.equal(statSync(join(dir.path, `back-${size}`)).mode & 0o777, 0o604);
      assert.equal(Math.floor(statSync(join(dir.path, `back-${size}`)).mtimeMs / 1000), 1_600_000_000);
    });
  }

  test("1 GiB sparse file both ways (hole fast path)", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const src = join(dir.path, "sparse");
    execFileSync("truncate", ["-s", "1G", src]);
    const up = await ssh.put(src, join(dir.path, "sparse-remote"));
    assert.equal(up.bytesSent, 0);
    const down = await ssh.get(join(dir.path, "sparse-remote"), join(dir.path, "sparse-back"));
    assert.equal(down.bytesSent, 0);
    assert.equal(statSync(join(dir.path, "sparse-back")).size, 1024 ** 3);
  });

  test("a tree with modes, mtimes, symlinks and unicode names", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const src = join(dir.path, "tree");
    mkdirSync(join(src, "ßub", "ünï"), { recursive: true });
    writeFileSync(join(src, "ßub", "ünï", "文件"), randomBytes(5000));
    writeFileSync(join(src, "x.sh"), "#!/bin/sh\n");
    chmodSync(join(src, "x.sh"), 0o700);
    symlinkSync("ßub/ünï/文件", join(src, "link"));
    utimesSync(join(src, "ßub"), new Date(), new Date(1_500_000_000_000));
    mkdirSync(join(dir.path, "remote-parent"));
    await ssh.put(src, join(dir.path, "remote-parent"), { recursive: true });
    assert.deepEqual(listTree(join(dir.path, "remote-parent", "tree")), listTree(src));
    await ssh.get(join(dir.path, "remote-parent", "tree"), join(dir.path, "tree-back"), { recursive: true });
    assert.deepEqual(listTree(join(dir.path, "tree-back")), listTree(src));
  });

  test("a remote symlink that escapes is refused on get and nothing is written outside", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const evil = join(dir.path, "evil");
    mkdirSync(evil);
    symlinkSync("../../../../etc", join(evil, "etc"));
    const dest = join(dir.path, "evil-dest");
    mkdirSync(dest);
    await assert.rejects(ssh.get(evil, dest, { recursive: true }), (e: TransferError) => e.code === "unsafe-path" && /points outside/.test(e.message));
    assert.deepEqual(readdirSync(join(dest, "evil")), []);
    assert.deepEqual(partialsUnder(dir.path), []);
  });

  test("too many entries are refused before anything is copied", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const many = join(dir.path, "many");
    mkdirSync(many);
    for (let i = 0; i < 50; i++) writeFileSync(join(many, `f${i}`), "");
    const dest = join(dir.path, "many-dest");
    await assert.rejects(ssh.get(many, dest, { recursive: true, limits: { maxEntries: 20 } }), (e: TransferError) => e.code === "limit");
    assert.ok(!existsSync(dest));
  });

  test("resume skips files already complete; cancel stops and removes the partial file", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const src = join(dir.path, "tree");
    const again = await ssh.put(src, join(dir.path, "remote-parent"), { recursive: true, resume: true });
    assert.equal(again.bytesSent, 0);
    const big = join(dir.path, "big");
    // Large enough that the cancel (at the first progress event past 1 MiB, events ≥ 100 ms apart) lands mid-transfer.
    writeFileSync(big, randomBytes(96 * 1024 * 1024));
    const ac = new AbortController();
    const conn = await SshTransfer.connect({ host: sshd!.host, port: sshd!.port, username: sshd!.username, privateKeyPath: sshd!.keyPath });
    try {
      await assert.rejects(
        conn.get(big, join(dir.path, "big-back"), { signal: ac.signal, onProgress: (p) => p.bytesDone > 1024 * 1024 && ac.abort() }),
        (e: TransferError) => e.code === "cancelled",
      );
    } finally {
      conn.dispose();
    }
    assert.ok(!existsSync(join(dir.path, "big-back")));
    assert.deepEqual(partialsUnder(dir.path), []);
  });

  test("resume continues a partial file from its verified prefix, both ways; a corrupt prefix is copied again", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const size = 12 * 1024 * 1024;
    const src = join(dir.path, "resume-src");
    const content = randomBytes(size);
    writeFileSync(src, content);
    const prefix = 10 * 1024 * 1024; // what an interrupted copy left (its last 4 MiB may have gaps: not trusted)
    const trusted = prefix - 4 * 1024 * 1024;

    // get: the host-side partial continues.
    const back = join(dir.path, "resume-back");
    writeFileSync(join(dir.path, ".resume-back.vmcpart"), content.subarray(0, prefix));
    const got = await ssh.get(src, back, { resume: true });
    assert.equal(got.bytesSent, size - trusted);
    assert.ok(readFileSync(back).equals(content));

    // put: the remote partial continues.
    const remote = join(dir.path, "resume-remote");
    writeFileSync(join(dir.path, ".resume-remote.vmcpart"), content.subarray(0, prefix));
    const put = await ssh.put(src, remote, { resume: true });
    assert.equal(put.bytesSent, size - trusted);
    assert.ok(readFileSync(remote).equals(content));

    // A partial whose prefix differs from the source is not trusted.
    const bad = Buffer.from(content.subarray(0, prefix));
    bad[1000] = bad[1000]! ^ 0xff;
    const back2 = join(dir.path, "resume-back2");
    writeFileSync(join(dir.path, ".resume-back2.vmcpart"), bad);
    const again = await ssh.get(src, back2, { resume: true });
    assert.equal(again.bytesSent, size);
    assert.ok(readFileSync(back2).equals(content));
    assert.deepEqual(partialsUnder(dir.path), []);
  });

  test("a cancelled get with keepPartial resumes where it stopped", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    const size = 32 * 1024 * 1024;
    const src = join(dir.path, "interrupted-src");
    writeFileSync(src, randomBytes(size));
    const back = join(dir.path, "interrupted-back");
    const ac = new AbortController();
    const conn = await SshTransfer.connect({ host: sshd!.host, port: sshd!.port, username: sshd!.username, privateKeyPath: sshd!.keyPath });
    try {
      await assert.rejects(
        conn.get(src, back, { keepPartial: true, signal: ac.signal, onProgress: (p) => p.bytesDone > 12 * 1024 * 1024 && ac.abort() }),
        (e: TransferError) => e.code === "cancelled",
      );
    } finally {
      conn.dispose();
    }
    const partial = join(dir.path, ".interrupted-back.vmcpart");
    assert.ok(statSync(partial).size > 4 * 1024 * 1024, "the partial file was kept");
    const resumed = await ssh.get(src, back, { resume: true });
    assert.ok(resumed.bytesSent < size, `resumed copy sent ${resumed.bytesSent} of ${size} bytes`);
    assert.equal(await sha256File(back), await sha256File(src));
    assert.ok(!existsSync(partial));
  });
});
