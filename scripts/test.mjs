// Runs the whole suite with Node's test runner: builds the bundles the tests spawn, then every
// `*.test.ts` under test/ (or the paths given). Exit status and the closing pass/fail counts are
// the runner's own.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const build = spawnSync(process.execPath, [join(root, "scripts/build.mjs")], { stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);

function collect(path) {
  if (statSync(path).isFile()) return path.endsWith(".test.ts") ? [path] : [];
  return readdirSync(path).sort().flatMap((name) => (name === "node_modules" ? [] : collect(join(path, name))));
}
const roots = process.argv.slice(2).length ? process.argv.slice(2) : ["test"];
const files = roots.flatMap((r) => collect(join(root, r))).map((f) => relative(root, f));
if (files.length === 0) {
  console.error("test: no test files found under", roots.join(", "));
  process.exit(1);
}
const concurrency = process.env.VMC_TEST_CONCURRENCY ?? "1";
const run = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", `--test-concurrency=${concurrency}`, "--test-reporter=spec", ...files],
  { stdio: "inherit", cwd: root },
);
process.exit(run.status ?? 1);
