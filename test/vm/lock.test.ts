/**
 * A VM's lock (server/src/store/vms.ts) across processes: when its holder has died, several
 * controllers contending at once take it over one at a time — never two inside together.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { VmStore } from "@vmc/server/store/vms";
import { removeHome, tempHome } from "./harness";

const CONTENDERS = 6;
const ROUNDS = 30;

test(`a dead holder's lock, ${CONTENDERS} processes contending at once, ${ROUNDS} rounds: one inside at a time`, { timeout: 120_000 }, async () => {
  const home = tempHome("vmc-lock-");
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) c.kill("SIGKILL");
    removeHome(home);
  });
  const store = new VmStore(home);
  mkdirSync(store.dir("locked"), { recursive: true });
  const lines: Array<{ next(): Promise<string> }> = [];
  for (let i = 0; i < CONTENDERS; i++) {
    const c = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures", "contend-lock.ts"), home, "locked"], { stdio: ["pipe", "pipe", "inherit"] });
    children.push(c);
    const it = createInterface({ input: c.stdout! })[Symbol.asyncIterator]();
    lines.push({ next: async () => (await it.next()).value as string });
  }
  for (const l of lines) assert.equal(await l.next(), "ready");

  const results: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // A lock left by a process that has exited (as by a controller killed with -9).
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    writeFileSync(join(store.dir("locked"), "lock"), `${dead.stdout}\n`);
    for (const c of children) c.stdin!.write("go\n");
    results.push(...(await Promise.all(lines.map((l) => l.next()))));
  }
  assert.equal(results.length, CONTENDERS * ROUNDS);
  assert.deepEqual(results.filter((r) => r !== "done"), [], "two processes were inside the lock at once");
});
