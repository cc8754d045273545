/**
 * The history store and controller leases on a real file system: expiry by age and by count
 * (never on reading), corrupt files skipped, and a dead controller's slot taken over with its identity.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CommandRecord } from "@vmc/protocol/rpc";
import { CommandStore, type StoredCommand } from "@vmc/server/store/commands";
import { acquireControllerLease, leaseDir } from "@vmc/server/store/controller-lease";

function home(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmc-cmd-store-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function command(id: string, at: number, state: CommandRecord["state"] = "finished"): StoredCommand {
  const empty = { data: "", totalBytes: 0, truncated: false };
  return {
    version: 1,
    owner: "kowner123",
    ownerPid: process.pid,
    tailBytes: 1024,
    wire: [{ agentId: "a", cmdId: `c-${id}`, issuedAt: at }],
    updatedAt: at,
    record: {
      id,
      target: "a",
      argv: ["true"],
      shell: false,
      state,
      submittedAt: at,
      finishedAt: state === "finished" ? at : null,
      ok: state === "finished",
      targets: [{ agentId: "a", status: state === "finished" ? "succeeded" : "running", exitCode: 0, signal: null, stdout: { ...empty, data: Buffer.from(id).toString("base64"), totalBytes: id.length }, stderr: empty, resources: null, startedAt: at, finishedAt: null }],
    },
  };
}

test("records are read as often as wanted and expire by age and by count, running ones never", (t) => {
  const now = Date.now();
  const store = new CommandStore(home(t), { maxAgeMs: 60_000, maxCount: 3 });
  store.write(command("k-old-finished", now - 120_000));
  store.write(command("k-old-running", now - 120_000, "running"));
  for (let i = 0; i < 5; i++) store.write(command(`k-recent-${i}`, now - i * 1000));
  for (let i = 0; i < 3; i++) assert.equal(Buffer.from(store.read("k-recent-4")!.record.targets[0]!.stdout.data, "base64").toString(), "k-recent-4");
  assert.equal(store.prune(now), 3, "one too old, two beyond the count");
  const left = store.list().map((c) => c.record.id);
  assert.deepEqual(left, ["k-recent-0", "k-recent-1", "k-recent-2", "k-old-running"], "newest first; the running one stays whatever its age");
  assert.equal(store.read("k-old-finished"), undefined);
  assert.equal(store.list()[0]!.record.targets[0]!.stdout.data, "", "listing carries no output tails");
});

test("corrupt, foreign and half-written files are skipped, old temporaries swept", (t) => {
  const dir = home(t);
  const store = new CommandStore(dir);
  store.write(command("k-good-one", Date.now()));
  writeFileSync(join(store.dir, "k-broken-1.json"), '{"version":1,"owner":');
  writeFileSync(join(store.dir, "k-wrong-1.json"), JSON.stringify({ version: 2 }));
  const tmp = join(store.dir, "k-good-one.json.999.tmp");
  writeFileSync(tmp, "partial");
  assert.deepEqual(store.list().map((c) => c.record.id), ["k-good-one"]);
  assert.equal(store.read("../../etc"), undefined, "ids cannot name files outside the store");
  store.prune(Date.now() + 120_000);
  assert.ok(!readdirSync(store.dir).includes("k-good-one.json.999.tmp"), "a temporary older than a minute is swept");
});

test("leases: live holders keep their slot; a dead holder's slot and identity are taken over", (t) => {
  const dir = home(t);
  const first = acquireControllerLease(dir);
  const second = acquireControllerLease(dir);
  assert.notEqual(first.slot, second.slot);
  assert.notEqual(first.instanceId, second.instanceId);
  // A holder that died without releasing: a lock naming a pid that no longer exists.
  const dead = spawnSync(process.execPath, ["-e", ""]).pid;
  const lock = join(leaseDir(dir), `slot-${second.slot}`, "lock");
  writeFileSync(lock, `${dead} 1\n`);
  const third = acquireControllerLease(dir, { prefer: () => [second.slot] });
  assert.equal(third.slot, second.slot, "the dead holder's slot is taken over");
  assert.equal(third.instanceId, second.instanceId, "with its identity (its reply subscription)");
  const fourth = acquireControllerLease(dir, { prefer: () => [first.slot] });
  assert.notEqual(fourth.slot, first.slot, "a slot held by a live process is never taken");
  for (const l of [first, third, fourth]) l.release();
  assert.equal(acquireControllerLease(dir).slot, 0, "released slots are free again");
});
