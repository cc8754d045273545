// Bundles the three deliverables with esbuild: the `vmc` CLI (controller, broker, agent), the
// self-contained guest agent (no node_modules inside a VM), and the VS Code extension.
import { build } from "esbuild";
import { dirname, join, sep } from "node:path";
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

// zod's `z` namespace re-exports every one of its ~60 locales; nothing here selects one, and zod's
// default is English. Only `en` goes into the bundles: each is ~365 KB smaller (the guest agent's
// 965 -> 602 KB, its startup snapshot 7.8 -> 7.1 MB; docs/BENCHMARKS.md, vm session 10).
const zodEnglishOnly = {
  name: "zod-english-only",
  setup(b) {
    // The module's name is not a path: the bundle names it in a comment, and the image id hashes
    // the bundle, so an absolute path would make it differ between checkouts.
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      args.importer.includes(`${sep}zod${sep}`)
        ? { path: "zod/locales (en only)", namespace: "zod-locales", pluginData: join(dirname(args.importer), "..", "locales") }
        : undefined);
    b.onLoad({ filter: /.*/, namespace: "zod-locales" }, (args) => ({
      contents: `export { default as en } from "./en.js";`,
      resolveDir: args.pluginData,
    }));
  },
};

const common = {
  plugins: [nativeAddonsExternal, zodEnglishOnly],
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
