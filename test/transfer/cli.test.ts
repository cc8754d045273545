/** `vmc cp` end to end: the built CLI, the embedded broker and a real `vmc agent` process. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startEmbeddedBroker, vmcBundle, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { listTree, tempDir } from "./util";

describe("vmc cp with a real agent", () => {
  const dir = tempDir();
  const home = join(dir.path, "home");
  let broker: EmbeddedBroker;
  let agentPid = 0;
  const env = () => ({ ...process.env, VMC_HOME: home, VMC_BROKER: broker.url });
  const cp = (...args: string[]) => {
    const r = spawnSync(process.execPath, [vmcBundle, "cp", "--json", ...args], { env: env(), encoding: "utf8", timeout: 60_000 });
    return { status: r.status, json: r.stdout ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined, stderr: r.stderr };
  };

  before(async () => {
    mkdirSync(home);
    broker = await startEmbeddedBroker({ port: await freePort() });
    const agent = spawn(process.execPath, [vmcBundle, "agent", "--id", "cp.agent.1", "--state-dir", join(dir.path, "agent-state")], {
      env: env(),
      detached: true,
      stdio: ["ignore", "ignore", "pipe"],
    });
    agentPid = agent.pid!;
    let log = "";
    // The agent reads the controller key from $VMC_HOME/keys (created on first use by either side).
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent did not connect: ${log}`)), 30_000);
      agent.stderr!.on("data", (d: Buffer) => {
        log += d.toString();
        if (/connected|HELLO|online/i.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      agent.once("exit", (code) => reject(new Error(`agent exited ${code}: ${log}`)));
    });
  });
  after(async () => {
    try {
      process.kill(-agentPid, "SIGKILL");
    } catch {
      // gone
    }
    await broker?.stop();
    dir.remove();
  });

  test("put and get a file, direct then over the bus", async () => {
    const src = join(dir.path, "data.bin");
    writeFileSync(src, randomBytes(2 * 1024 * 1024 + 3));
    const up = cp(src, `cp.agent.1:${join(dir.path, "remote.bin")}`);
    assert.equal(up.status, 0, up.stderr);
    assert.equal(up.json?.channel, "direct");
    assert.equal(up.json?.bytes, 2 * 1024 * 1024 + 3);
    const down = cp("--channel", "bus", `cp.agent.1:${join(dir.path, "remote.bin")}`, join(dir.path, "back.bin"));
    assert.equal(down.status, 0, down.stderr);
    assert.equal(down.json?.channel, "bus");
    assert.ok(readFileSync(join(dir.path, "back.bin")).equals(readFileSync(src)));
  });

  test("-r copies a tree; errors are reported with a code and a non-zero status", async () => {
    const tree = join(dir.path, "tree");
    mkdirSync(join(tree, "a"), { recursive: true });
    writeFileSync(join(tree, "a", "f"), "x");
    symlinkSync("a/f", join(tree, "l"));
    const remoteDir = join(dir.path, "remote-dir");
    mkdirSync(remoteDir);
    assert.equal(cp("-r", tree, `cp.agent.1:${remoteDir}`).status, 0);
    assert.deepEqual(listTree(join(remoteDir, "tree")), listTree(tree));
    const noR = cp(tree, `cp.agent.1:${remoteDir}/x`);
    assert.equal(noR.status, 1);
    assert.match(String(noR.json?.error), /-r/);
    const missing = cp(`cp.agent.1:${join(dir.path, "nope")}`, join(dir.path, "nope-back"));
    assert.equal(missing.status, 1);
    assert.match(String(missing.json?.error), /ENOENT|no such file/i);
  });
});
