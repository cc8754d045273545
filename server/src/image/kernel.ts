/**
 * The guest kernel built from Debian's kernel source package (`linux-source-<version>`) with a
 * small config: `make tinyconfig`, then the recipe's fragment (guest/kernel.config), then
 * `make vmlinux`. Built once per source, fragment and compiler and kept in {@link kernelCacheDir},
 * so that image rebuilds (a new agent, a changed init) reuse it. A build takes 6-13 min on two
 * cores; progress is reported while it runs.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, homedir } from "node:os";
import { join } from "node:path";
import { hasPvhNote } from "./pvh";
import { run } from "./run";
import { pidAlive } from "../pid";

/** Bumped when the build steps change what comes out for the same inputs. */
const BUILD_FORMAT = 1;

export interface BuiltKernel {
  /** Uncompressed, PVH-bootable vmlinux. */
  vmlinux: string;
  /** `uname -r` of the kernel. */
  release: string;
}

/**
 * Where built kernels are kept: per user, not per `$VMC_HOME`, so the demo's home, the tests' and
 * any other reuse one build (the key names every input, so sharing is safe).
 */
export function kernelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "vmc", "kernels");
}

/** One wanted line of the fragment: `CONFIG_X=value`, or `# CONFIG_X is not set` (value null). */
interface ConfigLine {
  name: string;
  value: string | null;
}

/** The option lines of a config fragment; comments and blank lines are skipped, anything else is an error. */
export function parseConfigFragment(text: string): ConfigLine[] {
  const lines: ConfigLine[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    const off = /^# (CONFIG_[A-Z0-9_]+) is not set$/.exec(line);
    const on = /^(CONFIG_[A-Z0-9_]+)=(y|m|-?\d+|0x[0-9a-fA-F]+|"[^"\\]*")$/.exec(line);
    if (off) lines.push({ name: off[1]!, value: null });
    else if (on) lines.push({ name: on[1]!, value: on[2]! });
    else if (line !== "" && !line.startsWith("#")) throw new Error(`kernel config line ${i + 1}: expected CONFIG_X=value or '# CONFIG_X is not set', got '${line}'`);
  });
  return lines;
}

/** The fragment's options that the final .config does not have as asked (Kconfig drops what it cannot satisfy). */
export function unmetOptions(wanted: ConfigLine[], finalConfig: string): string[] {
  const have = new Map<string, string>();
  for (const m of finalConfig.matchAll(/^(CONFIG_[A-Z0-9_]+)=(.*)$/gm)) have.set(m[1]!, m[2]!);
  return wanted
    .filter((w) => (w.value === null ? have.has(w.name) && have.get(w.name) !== "n" : have.get(w.name) !== w.value))
    .map((w) => `${w.name}: asked ${w.value ?? "not set"}, got ${have.get(w.name) ?? "not set"}`);
}

async function compilerVersion(): Promise<string> {
  try {
    return (await run("gcc", ["--version"])).toString().split("\n")[0]!.trim();
  } catch {
    throw new Error("gcc not found: building the guest kernel needs gcc, make, flex, bison, bc and libelf-dev (scripts/provision installs them)");
  }
}

/** The cache key of a kernel: the source package, the fragment, the compiler and these build steps. */
export async function kernelKey(sourceSha256: string, fragment: string): Promise<string> {
  const inputs = { format: BUILD_FORMAT, source: sourceSha256, fragment, gcc: await compilerVersion() };
  return createHash("sha256").update(JSON.stringify(inputs)).digest("hex").slice(0, 16);
}

/**
 * The kernel for `key` from the cache, else built from `sourceDeb` into it. A build runs in a
 * temp dir next to the entry and is renamed into place, so a killed build leaves no entry.
 */
export async function ensureKernel(o: {
  key: string;
  sourceDeb: string;
  fragment: string;
  cacheDir: string;
  progress: (m: string) => void;
}): Promise<BuiltKernel> {
  const entry = join(o.cacheDir, o.key);
  const cached = readEntry(entry);
  if (cached) {
    o.progress(`kernel ${cached.release} from the cache (${entry})`);
    return cached;
  }
  mkdirSync(o.cacheDir, { recursive: true });
  removeAbandoned(o.cacheDir);
  const tmp = mkdtempSync(join(o.cacheDir, `.tmp-${o.key}-`));
  writeFileSync(join(tmp, "owner"), String(process.pid));
  try {
    const built = await build(tmp, o);
    // Another process may have finished the same kernel meanwhile: its entry stays, as it may be in use.
    if (!readEntry(entry)) {
      rmSync(entry, { recursive: true, force: true });
      renameSync(built, entry);
    }
    return readEntry(entry) ?? Promise.reject(new Error(`kernel cache entry ${entry} unreadable right after the build`));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function readEntry(dir: string): BuiltKernel | undefined {
  const vmlinux = join(dir, "vmlinux");
  try {
    const release = readFileSync(join(dir, "release"), "utf8").trim();
    return release && existsSync(vmlinux) ? { vmlinux, release } : undefined;
  } catch {
    return undefined;
  }
}

/** Temp dirs of builds whose process is gone (killed, or the machine restarted). */
function removeAbandoned(cacheDir: string): void {
  for (const name of readdirSync(cacheDir)) {
    if (!name.startsWith(".tmp-")) continue;
    const dir = join(cacheDir, name);
    let owner = 0;
    try {
      owner = Number(readFileSync(join(dir, "owner"), "utf8"));
    } catch {
      // no owner: not a build of this code, or one killed before it began
    }
    if (!(owner > 0 && pidAlive(owner))) rmSync(dir, { recursive: true, force: true });
  }
}

async function build(tmp: string, o: { key: string; sourceDeb: string; fragment: string; progress: (m: string) => void }): Promise<string> {
  const started = Date.now();
  const wanted = parseConfigFragment(o.fragment);
  o.progress(`kernel: unpacking ${o.sourceDeb.split("/").pop()}`);
  const deb = join(tmp, "deb");
  await run("dpkg-deb", ["-x", o.sourceDeb, deb]);
  const srcDir = join(deb, "usr", "src");
  const tarball = readdirSync(srcDir).find((f) => /^linux-source-.*\.tar\.(xz|bz2|gz)$/.test(f));
  if (!tarball) throw new Error(`${o.sourceDeb}: no linux-source tarball in usr/src`);
  const tree = join(tmp, "linux");
  mkdirSync(tree);
  await run("tar", ["-xf", join(srcDir, tarball), "-C", tree, "--strip-components=1"]);
  rmSync(deb, { recursive: true, force: true });

  // Fixed build stamps: the same inputs make the same kernel (uname -v shows these).
  const env = { ...process.env, ARCH: "x86_64", KBUILD_BUILD_TIMESTAMP: "1970-01-01", KBUILD_BUILD_USER: "vmc", KBUILD_BUILD_HOST: "vmc", KBUILD_BUILD_VERSION: "1" };
  await run("make", ["tinyconfig"], { cwd: tree, env });
  writeFileSync(join(tree, ".config"), `${readFileSync(join(tree, ".config"), "utf8")}\n${o.fragment}\n`);
  await run("make", ["olddefconfig"], { cwd: tree, env });
  const finalConfig = readFileSync(join(tree, ".config"), "utf8");
  const unmet = unmetOptions(wanted, finalConfig);
  if (unmet.length) throw new Error(`kernel config: Kconfig did not keep ${unmet.length} option(s) of the fragment (missing dependencies?):\n  ${unmet.join("\n  ")}`);

  const jobs = availableParallelism();
  o.progress(`kernel: compiling (make -j${jobs} vmlinux; 6-13 min on two cores, once per source and config)`);
  await make(tree, ["-j", String(jobs), "vmlinux"], env, (files) => o.progress(`kernel: ${files} files compiled, ${((Date.now() - started) / 1000).toFixed(0)} s`));
  const release = (await run("make", ["-s", "kernelrelease"], { cwd: tree, env })).toString().trim();
  if (!hasPvhNote(readFileSync(join(tree, "vmlinux")))) throw new Error("kernel: the built vmlinux has no PVH entry note (is CONFIG_PVH in the fragment?)");

  const out = join(tmp, "out");
  mkdirSync(out);
  copyFileSync(join(tree, "vmlinux"), join(out, "vmlinux"));
  copyFileSync(join(tree, ".config"), join(out, "config"));
  writeFileSync(join(out, "release"), `${release}\n`);
  o.progress(`kernel ${release} built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return out;
}

/** `make` with a progress callback every 30 s, counted from its "  CC " lines. */
async function make(cwd: string, args: string[], env: NodeJS.ProcessEnv, onProgress: (files: number) => void): Promise<void> {
  let files = 0;
  const timer = setInterval(() => onProgress(files), 30_000);
  try {
    await run("make", args, { cwd, env, onOutput: (d) => (files += d.toString().split("\n").filter((l) => l.startsWith("  CC ")).length) });
  } finally {
    clearInterval(timer);
  }
}
