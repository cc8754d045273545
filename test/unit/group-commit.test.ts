import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GroupCommitFile } from "@vmc/agent/group-commit";

function tempFile(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmc-group-commit-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "journal.jsonl");
}

test("lazily appended records are written at once, in order, and ride on the next sync", async (t) => {
  const path = tempFile(t);
  const file = new GroupCommitFile(path);
  await file.append("a\n");
  file.appendLazily("b\n");
  assert.equal(readFileSync(path, "utf8"), "a\nb\n", "written at once (readable after a crash of the process)");
  const durable = file.append("c\n");
  file.appendLazily("d\n"); // while c's sync is in flight: it must not keep close() waiting forever
  await durable;
  await file.close();
  assert.equal(readFileSync(path, "utf8"), "a\nb\nc\nd\n");
  await assert.rejects(file.append("e\n"), /closed/);
});

test("close() makes lazily appended records durable without a waiting append", async (t) => {
  const path = tempFile(t);
  const file = new GroupCommitFile(path);
  for (let i = 0; i < 100; i++) file.appendLazily(`${i}\n`);
  await file.close();
  assert.equal(readFileSync(path, "utf8").split("\n").length, 101);
});
