// The extension's smoke suite inside a downloaded desktop VS Code (Electron), for machines that can
// download it: `npm install --no-save @vscode/test-electron && node scripts/test-electron.mjs`.
// Not run in CI (no download there): CI's proof is the code-server suite, `npm test -- test/ui`.
// VSCODE_VERSION picks the build (default "stable"); the suite is test/electron/suite.cjs.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
let testElectron;
try {
  testElectron = await import("@vscode/test-electron");
} catch {
  console.error("test-electron: @vscode/test-electron is not installed; run `npm install --no-save @vscode/test-electron` first");
  process.exit(2);
}
const build = spawnSync(process.execPath, [join(root, "scripts/build.mjs")], { stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);

const scratch = mkdtempSync(join(tmpdir(), "vmc-test-electron-"));
try {
  await testElectron.runTests({
    version: process.env.VSCODE_VERSION ?? "stable",
    extensionDevelopmentPath: root,
    extensionTestsPath: join(root, "test/electron/suite.cjs"),
    launchArgs: ["--disable-extensions", "--disable-workspace-trust", "--user-data-dir", join(scratch, "user-data"), join(scratch, "workspace")],
    extensionTestsEnv: { VMC_HOME: join(scratch, "home") },
  });
  console.log("test-electron: ok");
} catch (e) {
  console.error("test-electron: failed", e);
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
