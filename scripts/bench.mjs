// Runs every benchmark under bench/ (or the ones named: `npm run bench -- bus exec`), in order.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
spawnSync(process.execPath, [join(root, "scripts/build.mjs")], { stdio: "inherit" });
const names = process.argv.slice(2).length
  ? process.argv.slice(2)
  : readdirSync(join(root, "bench")).filter((n) => existsSync(join(root, "bench", n, "main.ts"))).sort();
let failed = 0;
for (const name of names) {
  console.log(`\n=== bench/${name} ===`);
  const r = spawnSync(process.execPath, ["--import", "tsx", join(root, "bench", name, "main.ts")], { stdio: "inherit", cwd: root });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
