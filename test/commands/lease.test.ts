/**
 * Controller slots (server/src/store/controller-lease.ts) across processes: several controllers
 * starting at the same moment, with slots left locked by dead controllers or being taken, never
 * share a slot (its instanceId is a controller's reply destination).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { leaseDir } from "@vmc/server/store/controller-lease";
import { removeHome, tempHome } from "../vm/harness";

const CONTENDERS = 6;
const ROUNDS = 30;

test(`${CONTENDERS} controllers taking slots at once, dead holders' locks on the first slots, ${ROUNDS} rounds: never two in one slot`, { timeout: 120_000 }, async () => {
  const home = tempHome("vmc-lease-");
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill("SIGKILL");
    removeHome(home);
  });
  const lines: Array<() => Promise<string>> = [];
  for (let i = 0; i < CONTENDERS; i++) {
    const c = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "contend-lease.ts"), home], { stdio: ["pipe", "pipe", "inherit"] });
    children.push(c);
    const it = createInterface({ input: c.stdout! })[Symbol.asyncIterator]();
    lines.push(async () => (await it.next()).value as string);
  }
  for (const next of lines) assert.equal(await next(), "ready");

  for (let round = 0; round < ROUNDS; round++) {
    // Locks left by processes that have exited (controllers killed with -9), with and without a start time.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
    for (let slot = 0; slot < 3; slot++) {
      mkdirSync(join(leaseDir(home), `slot-${slot}`), { recursive: true });
      writeFileSync(join(leaseDir(home), `slot-${slot}`, "lock"), slot === 2 ? `${dead}\n` : `${dead} 12345\n`);
    }
    for (const c of children) c.stdin!.write("go\n");
    const taken = await Promise.all(lines.map((next) => next()));
    const slots = taken.map((l) => l.split(" ")[1]);
    assert.equal(new Set(slots).size, CONTENDERS, `round ${round}: two controllers in one slot: ${taken.join(", ")}`);
    assert.equal(new Set(taken.map((l) => l.split(" ")[2])).size, CONTENDERS, "distinct instance ids");
    for (const c of children) c.stdin!.write("release\n");
    for (const next of lines) assert.equal(await next(), "released");
  }
});
