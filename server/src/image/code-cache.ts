/**
 * The agent's V8 code cache for the guest (guest/agent-loader.cjs). Parsing and compiling the
 * ~1 MB agent bundle under TCG is a large share of the boot, so the build converts the ESM bundle
 * to CommonJS (V8 code caches need a classic script; Node 20 has no ESM compile cache), runs it
 * once with the guest's own Node binary (a cache only loads into the Node/V8 that made it) and
 * stores the cache. Optional: without esbuild, or if anything fails, the guest runs agent.mjs.
 */
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./run";

/** The first line scripts/build.mjs puts in ESM bundles; CommonJS has its own `require`. */
const REQUIRE_SHIM = "import { createRequire as __vmcCreateRequire } from 'node:module'; const require = __vmcCreateRequire(import.meta.url);";

interface EsbuildTransform {
  transform(code: string, options: Record<string, unknown>): Promise<{ code: string }>;
}

/**
 * Writes `<libDir>/agent.cjs`, `agent.cjs.cache` and `agent-loader.cjs`; returns why not when it
 * cannot (the image then starts agent.mjs directly).
 */
export async function buildAgentCodeCache(libDir: string, agentBundle: string, loader: string, node: string): Promise<{ ok: true; cacheBytes: number } | { ok: false; reason: string }> {
  const cjs = join(libDir, "agent.cjs");
  try {
    // A computed name: esbuild is a build-time tool that the bundled CLI must not inline.
    const esbuildName = "esbuild";
    const esbuild = (await import(esbuildName)) as EsbuildTransform;
    const source = readFileSync(agentBundle, "utf8").replace(/^#!.*\n/, "").replace(REQUIRE_SHIM, "");
    const out = await esbuild.transform(source, {
      format: "cjs",
      platform: "node",
      target: "node18",
      loader: "js",
      define: { "import.meta.url": "__vmcImportMetaUrl" },
      banner: "var __vmcImportMetaUrl = require(\"node:url\").pathToFileURL(__filename).href;",
      logLevel: "error",
    });
    writeFileSync(cjs, out.code);
    copyFileSync(loader, join(libDir, "agent-loader.cjs"));
    await run(node, [join(libDir, "agent-loader.cjs"), "--produce-cache", cjs], { env: { PATH: "/usr/bin:/bin", HOME: libDir } });
    const cacheFile = `${cjs}.cache`;
    if (!existsSync(cacheFile)) throw new Error("no cache was written");
    return { ok: true, cacheBytes: readFileSync(cacheFile).length };
  } catch (e) {
    for (const f of [cjs, `${cjs}.cache`, join(libDir, "agent-loader.cjs")]) rmSync(f, { force: true });
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
}
