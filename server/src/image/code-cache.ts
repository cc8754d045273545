/**
 * How the guest starts its agent fast. Parsing, compiling and evaluating the ~0.6 MB agent bundle
 * under TCG is a large share of the boot, so the build converts the ESM bundle to CommonJS (V8
 * code caches and startup snapshots need a classic script) and, with the guest's own Node binary
 * (both only load into the Node/V8 that made them):
 * - a V8 code cache of it (guest/agent-loader.cjs), which saves the compiling;
 * - a startup snapshot (`node --build-snapshot`), the heap after the bundle's top level ran, which
 *   saves the evaluating too. guest/vmc-agent starts the agent from it, and from the code cache
 *   when it restarts the agent, Node flags are set or the CPU is not TCG's.
 * Both are optional: without esbuild, or if anything fails, the guest runs agent.mjs.
 */
import { copyFileSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MACHINE_VERSION, tcgCpu } from "../hypervisors/qemu/command";
import { run } from "./run";

/**
 * Node only loads a snapshot made by the same Node, with the same V8 flags, on a CPU with the same
 * features V8 uses, and the guest's CPU is QEMU's `max` model under TCG, not this host's. So the
 * snapshot is built by the guest's node running under qemu-user with the guest's model
 * ({@link tcgCpu}; same features as the guest, measured: same cachedDataVersionTag). A KVM guest
 * (`-cpu host`) would refuse it, so guest/vmc-agent starts one from the code cache.
 */
const QEMU_USER = "/usr/bin/qemu-x86_64";
const GUEST_CPU = ["-cpu", tcgCpu(MACHINE_VERSION)];

/**
 * The snapshot's builder as it goes into the image id: qemu-user's version line (its `max` model's
 * features are the ones the blob is made for), or null when there is none and no blob is made. So
 * installing or upgrading qemu-user rebuilds the image.
 */
export async function snapshotBuilder(): Promise<string | null> {
  if (!existsSync(QEMU_USER)) return null;
  try {
    return (await run(QEMU_USER, ["--version"])).toString().split("\n")[0]!.trim();
  } catch {
    return null;
  }
}

/** What `node --snapshot-blob agent.blob -- --help` must print for the snapshot to be kept. */
const USAGE_PREFIX = "usage: vmc agent";

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

/**
 * Writes `<libDir>/agent.blob`, a startup snapshot of `<libDir>/agent.cjs` (made by
 * {@link buildAgentCodeCache}), and checks that it starts; returns why not when it cannot.
 * The bundle's top level runs at build time and its heap goes to every guest, so module scope
 * must hold nothing that differs per process (randomness such as randomUUID's pool, environment,
 * time, pids); agent/src/main.ts defers all of the agent's work to the snapshot's main function.
 */
export async function buildAgentSnapshot(libDir: string, node: string): Promise<{ ok: true; blobBytes: number } | { ok: false; reason: string }> {
  const blob = join(libDir, "agent.blob");
  const env = { PATH: "/usr/bin:/bin", HOME: libDir };
  try {
    if (!existsSync(QEMU_USER)) throw new Error(`${QEMU_USER} is missing (Debian package qemu-user)`);
    await run(QEMU_USER, [...GUEST_CPU, node, "--snapshot-blob", blob, "--build-snapshot", join(libDir, "agent.cjs")], { env, cwd: libDir });
    const usage = (await run(QEMU_USER, [...GUEST_CPU, node, "--snapshot-blob", blob, "--", "--help"], { env, cwd: libDir })).toString();
    if (!usage.startsWith(USAGE_PREFIX)) throw new Error(`the snapshot does not start the agent (--help printed ${JSON.stringify(usage.slice(0, 80))})`);
    return { ok: true, blobBytes: statSync(blob).size };
  } catch (e) {
    rmSync(blob, { force: true });
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
}
