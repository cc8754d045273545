/**
 * A test that needs a missing component skips with the reason outside CI and FAILS under CI=true
 * (test/harness/components.ts), so CI never passes by skipping.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

function runProbe(ci: string | undefined): { status: number | null; out: string } {
  const dir = mkdtempSync(join(tmpdir(), "vmc-components-"));
  try {
    const probe = join(dir, "probe.test.ts");
    const harness = pathToFileURL(join(import.meta.dirname, "..", "harness", "components.ts")).href;
    writeFileSync(probe, `import { it } from "node:test";\nimport { requireComponent } from ${JSON.stringify(harness)};\nit("needs a missing thing", (t) => {\n  if (!requireComponent(t, "frobnicator", false, "apt-get install frobnicator")) return;\n  throw new Error("ran without the component");\n});\n`);
    const env = { ...process.env };
    delete env.CI;
    delete env.NODE_TEST_CONTEXT;
    if (ci !== undefined) env.CI = ci;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=tap", probe], { env, encoding: "utf8" });
    return { status: r.status, out: r.stdout + r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("outside CI a missing component skips the test, naming it and how to get it", () => {
  const r = runProbe(undefined);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /# SKIP frobnicator is not installed \(apt-get install frobnicator\)/);
  assert.match(r.out, /# fail 0/);
});

test("with CI=true a missing component fails the test", () => {
  const r = runProbe("true");
  assert.notEqual(r.status, 0, r.out);
  assert.match(r.out, /frobnicator is not installed \(apt-get install frobnicator\); CI requires it/);
  assert.match(r.out, /# fail 1/);
  assert.match(r.out, /# skipped 0/);
});
