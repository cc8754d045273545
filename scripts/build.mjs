// Bundles the three deliverables with esbuild: the `vmc` CLI (controller, broker, agent), the
// self-contained guest agent (no node_modules inside a VM), and the VS Code extension.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const production = process.argv.includes("--production");
// ESM bundles still meet CommonJS dependencies that call require() on Node built-ins.
const requireShim = "import { createRequire as __vmcCreateRequire } from 'node:module'; const require = __vmcCreateRequire(import.meta.url);";

// ssh2 tries optional native addons (cpu-features, sshcrypto) inside try/catch and falls back to
// pure JS; left external they fail to load at run time and the fallback is used.
const nativeAddonsExternal = {
  name: "native-addons-external",
  setup(b) {
    b.onResolve({ filter: /\.node$/ }, (args) => ({ path: args.path, external: true }));
  },
};

const common = {
  plugins: [nativeAddonsExternal],
  absWorkingDir: root,
  bundle: true,
  platform: "node",
  target: "node18",
  sourcemap: production ? false : "linked",
  minify: production,
  logLevel: "warning",
  legalComments: "none",
};

await Promise.all([
  build({ ...common, entryPoints: ["server/src/cli/main.ts"], outfile: "dist/vmc.mjs", format: "esm", banner: { js: requireShim } }),
  build({ ...common, entryPoints: ["agent/src/main.ts"], outfile: "dist/agent.mjs", format: "esm", banner: { js: `#!/usr/bin/env node\n${requireShim}` } }),
  build({ ...common, entryPoints: ["client/src/extension.ts"], outfile: "dist/extension.cjs", format: "cjs", external: ["vscode"] }),
]);
