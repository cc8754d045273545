/**
 * The image build and its cache: inputs are resolved and hashed first (no download), a valid
 * `$VMC_HOME/images/<id>/` is reused, anything else is built in a temp dir and renamed into place.
 */
import { createHash } from "node:crypto";
import {
  chmodSync, copyFileSync, lstatSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { vmcHome } from "../config";
import { fetchDeb, resolveDebs, sha256File, type DebPackage } from "./apt";
import { S_IFCHR, entriesFromDir, writeCpio } from "./cpio";
import { buildAgentCodeCache, buildAgentSnapshot, snapshotBuilder } from "./code-cache";
import { ensureKernel, kernelCacheDir, kernelKey } from "./kernel";
import { moduleLoadOrder, stripModuleSignature } from "./kmod";
import { pvhKernel } from "./pvh";
import { fetchNode } from "./node-dist";
import { RECIPE_FILES, loadRecipe, projectRoot, type Recipe } from "./recipe";
import { run } from "./run";
import type { EnsureGuestImageOptions, GuestImage } from "./types";

const FILES = { kernel: "kernel", initrd: "initrd", rootfs: "rootfs.img", baseDisk: "base.qcow2" } as const;
type FileKey = keyof typeof FILES;

interface Inputs {
  recipe: Recipe;
  guestDir: string;
  agentBundle: string;
  agentVersion: string;
  kernel: DebPackage;
  /** Cache key of the kernel built from `kernel` when the recipe's kernel is a source package, else null. */
  kernelKey: string | null;
  busybox: DebPackage;
  libraries: DebPackage[];
  /** Everything that determines the image, hashed into its id. */
  fingerprint: Record<string, unknown>;
}

export interface Manifest {
  id: string;
  builtAt: string;
  cmdline: string;
  agentVersion: string;
  kernelRelease: string;
  inputs: Record<string, unknown>;
  files: Record<FileKey, { name: string; size: number; sha256: string }>;
}

async function resolveInputs(root: string, home: string, agentBundleOverride?: string): Promise<Inputs> {
  const guestDir = join(root, "guest");
  const recipe = loadRecipe(guestDir);
  const agentBundle = agentBundleOverride ?? join(root, "dist", "agent.mjs");
  if (!existsSync(agentBundle)) throw new Error(`${agentBundle} is missing: run 'npm run build' first`);
  const agentSha = await sha256File(agentBundle);
  let pkgVersion = "unknown";
  try {
    pkgVersion = String((JSON.parse(readFileSync(join(root, "agent", "package.json"), "utf8")) as { version?: string }).version ?? "unknown");
  } catch {
    // an installed bundle without the agent sources: the checksum still tells versions apart
  }
  const [kernel, busybox, ...libraries] = await resolveDebs(recipe.kernel.package, [recipe.busyboxPackage, ...recipe.libraryPackages], join(home, "cache", "apt-candidates.json"));
  const recipeFiles: Record<string, string> = {};
  for (const f of RECIPE_FILES) recipeFiles[f] = createHash("sha256").update(readFileSync(join(guestDir, f))).digest("hex");
  const debs = [kernel!, busybox!, ...libraries].map((d) => ({ name: d.name, version: d.version, sha256: d.sha256 }));
  const builtKernel = recipe.kernel.kind === "source" ? await kernelKey(kernel!.sha256, readFileSync(join(guestDir, recipe.kernel.config), "utf8")) : null;
  return {
    recipe,
    guestDir,
    agentBundle,
    agentVersion: `${pkgVersion}+${agentSha.slice(0, 8)}`,
    kernel: kernel!,
    kernelKey: builtKernel,
    busybox: busybox!,
    libraries,
    fingerprint: { format: 8, debs, kernelBuild: builtKernel, node: recipe.node, agentSha256: agentSha, recipeFiles, snapshotBuilder: await snapshotBuilder() },
  };
}

const imageId = (fingerprint: Record<string, unknown>) => createHash("sha256").update(JSON.stringify(fingerprint)).digest("hex").slice(0, 16);

/** A UUID derived from the image id, so two builds of the same inputs make the same file systems. */
function uuidFrom(id: string, salt: string): string {
  const h = createHash("sha256").update(`${id}/${salt}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function toImage(dir: string, m: Manifest): GuestImage {
  return {
    id: m.id,
    dir,
    kernel: join(dir, m.files.kernel.name),
    initrd: join(dir, m.files.initrd.name),
    rootfs: join(dir, m.files.rootfs.name),
    baseDisk: join(dir, m.files.baseDisk.name),
    cmdline: m.cmdline,
    agentVersion: m.agentVersion,
  };
}

/** A file's identity as far as the cache is concerned: an in-place write changes its ctime. */
const stampOf = (st: { ino: number; size: number; mtimeMs: number; ctimeMs: number }) => `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
const STAMPS = ".verified.json";

/**
 * The manifest of a complete, uncorrupted cache entry, else the reason it is not one. Files are
 * checked against the manifest's sizes and SHA-256 sums; a full hash is skipped for a file whose
 * inode, size, mtime and ctime are those recorded when it was last hashed (`.verified.json`).
 */
export async function verifyEntry(dir: string): Promise<{ ok: true; manifest: Manifest } | { ok: false; reason: string }> {
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
  } catch (e) {
    return { ok: false, reason: existsSync(dir) ? `manifest unreadable (${(e as Error).message})` : "not built" };
  }
  let stamps: Record<string, string> = {};
  try {
    stamps = JSON.parse(readFileSync(join(dir, STAMPS), "utf8")) as Record<string, string>;
  } catch {
    // first verification in this entry
  }
  const fresh: Record<string, string> = {};
  for (const key of Object.keys(FILES) as FileKey[]) {
    const f = m.files?.[key];
    if (!f) return { ok: false, reason: `manifest lacks ${key}` };
    const path = join(dir, f.name);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) return { ok: false, reason: `${f.name} missing` };
    if (st.size !== f.size) return { ok: false, reason: `${f.name} has ${st.size} bytes, manifest says ${f.size}` };
    const stamp = `${f.sha256}:${stampOf(st)}`;
    if (stamps[f.name] !== stamp && (await sha256File(path)) !== f.sha256) return { ok: false, reason: `${f.name} checksum mismatch` };
    fresh[f.name] = stamp;
  }
  if (JSON.stringify(fresh) !== JSON.stringify(stamps)) {
    try {
      writeFileSync(join(dir, STAMPS), JSON.stringify(fresh));
    } catch {
      // a read-only cache still verifies, only more slowly
    }
  }
  return { ok: true, manifest: m };
}

const inFlight = new Map<string, Promise<GuestImage>>();

export async function buildOrReuse(opts: EnsureGuestImageOptions): Promise<GuestImage> {
  const progress = opts.onProgress ?? (() => {});
  const home = opts.home ?? vmcHome();
  progress("resolving inputs (apt candidates, node, agent bundle, recipe)");
  const inputs = await resolveInputs(projectRoot(), home, opts.agentBundle);
  const id = imageId(inputs.fingerprint);
  const key = `${home}\0${id}\0${opts.force ? "force" : ""}`;
  const pending = inFlight.get(key);
  if (pending) return pending;
  const job = ensure(home, id, inputs, opts.force ?? false, progress).finally(() => inFlight.delete(key));
  inFlight.set(key, job);
  return job;
}

async function ensure(home: string, id: string, inputs: Inputs, force: boolean, progress: (m: string) => void): Promise<GuestImage> {
  const imagesDir = join(home, "images");
  const dir = join(imagesDir, id);
  if (!force) {
    const v = await verifyEntry(dir);
    if (v.ok) {
      progress(`image ${id} is up to date (${dir})`);
      return toImage(dir, v.manifest);
    }
    progress(`image ${id}: ${v.reason}; building`);
  } else {
    progress(`image ${id}: rebuilding (--force)`);
  }
  mkdirSync(imagesDir, { recursive: true });
  removeAbandoned(imagesDir);
  const tmp = mkdtempSync(join(imagesDir, `.tmp-${id}-`));
  try {
    const manifest = await buildInto(tmp, id, inputs, home, progress);
    if (existsSync(dir)) {
      const trash = mkdtempSync(join(imagesDir, `.trash-${id}-`));
      renameSync(dir, join(trash, "old"));
      rmSync(trash, { recursive: true, force: true });
    }
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another process finished the same image first: use theirs if it is sound.
      const v = await verifyEntry(dir);
      if (!v.ok) throw e;
      rmSync(tmp, { recursive: true, force: true });
      return toImage(dir, v.manifest);
    }
    return toImage(dir, manifest);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Temp and trash dirs of builds that were killed (an hour is far longer than any build). */
function removeAbandoned(imagesDir: string): void {
  for (const name of readdirSync(imagesDir)) {
    if (!name.startsWith(".tmp-") && !name.startsWith(".trash-")) continue;
    const st = statSync(join(imagesDir, name), { throwIfNoEntry: false });
    if (st && Date.now() - st.mtimeMs > 3_600_000) rmSync(join(imagesDir, name), { recursive: true, force: true });
  }
}

async function buildInto(out: string, id: string, inputs: Inputs, home: string, progress: (m: string) => void): Promise<Manifest> {
  const started = Date.now();
  const { recipe } = inputs;
  const work = join(out, ".work");
  const debCache = join(home, "cache", "debs");
  const debs = [inputs.kernel, inputs.busybox, ...inputs.libraries];
  progress(`fetching ${debs.map((d) => `${d.name} ${d.version}`).join(", ")} and ${recipe.node.package}@${recipe.node.version}`);
  const [nodeTgz, ...debFiles] = await Promise.all([
    fetchNode(recipe.node, join(home, "cache", "npm")),
    ...debs.map((d) => fetchDeb(d, debCache)),
  ]);
  const [kernelDeb, busyboxDeb, ...libDebs] = debFiles as string[];

  progress("unpacking packages");
  const bx = join(work, "busybox");
  const lx = join(work, "libs");
  const rootfs = join(work, "rootfs");
  mkdirSync(join(rootfs, "bin"), { recursive: true });
  const [kernel] = await Promise.all([
    guestKernel(kernelDeb!, inputs, out, work, progress),
    run("dpkg-deb", ["-x", busyboxDeb!, bx]),
    ...libDebs.map((d) => run("dpkg-deb", ["-x", d, lx])),
    run("tar", ["-xzf", nodeTgz!, "-C", join(rootfs, "bin"), "--strip-components=2", "package/bin/node"]),
  ]);

  progress("read-only system disk (node, libraries, agent)");
  await buildRootfs(rootfs, lx, inputs);
  const codeCache = await buildAgentCodeCache(join(rootfs, "lib", "vmc"), inputs.agentBundle, join(inputs.guestDir, "agent-loader.cjs"), join(rootfs, "bin", "node"));
  progress(codeCache.ok ? `agent code cache ${(codeCache.cacheBytes / 1024).toFixed(0)} KiB` : `no agent code cache (the guest compiles agent.mjs at boot): ${codeCache.reason}`);
  if (codeCache.ok) {
    const snapshot = await buildAgentSnapshot(join(rootfs, "lib", "vmc"), join(rootfs, "bin", "node"));
    progress(snapshot.ok ? `agent startup snapshot ${(snapshot.blobBytes / 1048576).toFixed(1)} MiB` : `no agent startup snapshot (the guest evaluates the bundle at boot): ${snapshot.reason}`);
  }
  await run("mke2fs", mke2fsArgs(rootfs, id, join(out, FILES.rootfs)), { env: { ...process.env, E2FSPROGS_FAKE_TIME: "1" } });

  progress(`initramfs (busybox, init${kernel.modules.length ? `, modules ${kernel.modules.map((m) => m.name).join(" ")}` : ""})`);
  const initrdDir = join(work, "initramfs");
  await buildInitramfsTree(initrdDir, join(bx, "bin", "busybox"), kernel.modules, inputs.guestDir);
  const cpio = writeCpio([...entriesFromDir(initrdDir), { name: "dev/console", mode: S_IFCHR | 0o600, rdev: { major: 5, minor: 1 } }]);
  writeFileSync(join(out, FILES.initrd), await run("zstd", ["-q", "-9", "-c"], { input: cpio }));

  progress(`blank state disk (${recipe.stateDiskMiB} MiB ext4, qcow2)`);
  const raw = join(work, "state.raw");
  writeFileSync(raw, "");
  await run("truncate", ["-s", `${recipe.stateDiskMiB}M`, raw]);
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "vmc-state", "-m", "0", "-i", "32768", "-U", uuidFrom(id, "state"),
    "-E", `lazy_itable_init=0,lazy_journal_init=0,hash_seed=${uuidFrom(id, "state-hash")}`, raw], { env: { ...process.env, E2FSPROGS_FAKE_TIME: "1" } });
  await run("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, join(out, FILES.baseDisk)]);
  rmSync(work, { recursive: true, force: true });

  const files = {} as Manifest["files"];
  const stamps: Record<string, string> = {};
  for (const key of Object.keys(FILES) as FileKey[]) {
    const path = join(out, FILES[key]);
    const st = statSync(path);
    files[key] = { name: FILES[key], size: st.size, sha256: await sha256File(path) };
    stamps[FILES[key]] = `${files[key].sha256}:${stampOf(st)}`;
  }
  writeFileSync(join(out, STAMPS), JSON.stringify(stamps));
  const manifest: Manifest = {
    id,
    builtAt: new Date().toISOString(),
    cmdline: recipe.cmdline,
    agentVersion: inputs.agentVersion,
    kernelRelease: kernel.release,
    inputs: inputs.fingerprint,
    files,
  };
  writeFileSync(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  progress(`built ${id} in ${((Date.now() - started) / 1000).toFixed(1)} s: kernel ${mib(files.kernel.size)}, initrd ${mib(files.initrd.size)}, rootfs ${mib(files.rootfs.size)}, base ${mib(files.baseDisk.size)}`);
  return manifest;
}

/**
 * The image's kernel file, written to `out`: a vmlinux built from the source package (cached across
 * images), or the binary package's, made PVH-bootable where it can be, and the modules to load.
 */
async function guestKernel(deb: string, inputs: Inputs, out: string, work: string, progress: (m: string) => void): Promise<{ release: string; modules: { name: string; path: string }[] }> {
  const k = inputs.recipe.kernel;
  if (k.kind === "source") {
    const built = await ensureKernel({
      key: inputs.kernelKey!, // set by resolveInputs for every source kernel
      sourceDeb: deb,
      fragment: readFileSync(join(inputs.guestDir, k.config), "utf8"),
      cacheDir: kernelCacheDir(),
      progress,
    });
    copyFileSync(built.vmlinux, join(out, FILES.kernel));
    return { release: built.release, modules: [] };
  }
  const kx = join(work, "kernel");
  await run("dpkg-deb", ["-x", deb, kx]);
  const release = readdirSync(join(kx, "lib", "modules"))[0];
  const vmlinuz = readdirSync(join(kx, "boot")).find((f) => f.startsWith("vmlinuz-"));
  if (!release || !vmlinuz) throw new Error(`${inputs.kernel.name}: no kernel or modules inside`);
  const bzImage = readFileSync(join(kx, "boot", vmlinuz));
  const pvh = await pvhKernel(bzImage);
  writeFileSync(join(out, FILES.kernel), pvh.ok ? pvh.vmlinux : bzImage);
  progress(pvh.ok ? `kernel: PVH entry, uncompressed vmlinux (${pvh.format} payload of ${vmlinuz})` : `kernel: ${vmlinuz} as is (${pvh.reason})`);
  return { release, modules: moduleLoadOrder(join(kx, "lib", "modules", release), k.modules) };
}

function mke2fsArgs(src: string, id: string, target: string): string[] {
  const bytes = duBytes(src);
  // A 2 MiB multiple: the QEMU driver maps the file whole into the guest as virtio-pmem.
  const kib = Math.ceil((Math.ceil((bytes * 1.15) / 1024) + 16 * 1024) / 2048) * 2048;
  return ["-q", "-F", "-t", "ext4", "-L", "vmc-ro", "-O", "^has_journal", "-m", "0", "-b", "4096", "-U", uuidFrom(id, "ro"),
    "-E", `root_owner=0:0,hash_seed=${uuidFrom(id, "ro-hash")}`, "-d", src, target, `${kib}k`];
}

function duBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += 4096 + duBytes(p);
    else total += Math.ceil(lstatSync(p).size / 4096) * 4096 + 256;
  }
  return total;
}

/** /usr of the guest: node, the glibc/libstdc++/libgcc libraries it links against, the agent. */
async function buildRootfs(usr: string, libsExtract: string, inputs: Inputs): Promise<void> {
  const multiarch = join(usr, "lib", "x86_64-linux-gnu");
  mkdirSync(multiarch, { recursive: true });
  for (const from of [join(libsExtract, "lib", "x86_64-linux-gnu"), join(libsExtract, "usr", "lib", "x86_64-linux-gnu")]) {
    if (!existsSync(from)) continue;
    cpSync(from, multiarch, { recursive: true, verbatimSymlinks: true, filter: (p) => !p.includes("/gconv") });
  }
  cpSync(join(libsExtract, "lib64"), join(usr, "lib64"), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(usr, "lib", "vmc"), { recursive: true });
  copyFileSync(inputs.agentBundle, join(usr, "lib", "vmc", "agent.mjs"));
  symlinkSync("/bin/busybox", join(usr, "bin", "env"));
  chmodSync(join(usr, "bin", "node"), 0o755);
}

async function buildInitramfsTree(dir: string, busybox: string, modules: { name: string; path: string }[], guestDir: string): Promise<void> {
  for (const d of ["bin", "dev", "proc", "sys", "run", "tmp", "usr", "var/lib/vmc", "root", "etc/acpi/PWRF"]) mkdirSync(join(dir, d), { recursive: true });
  chmodSync(join(dir, "tmp"), 0o1777);
  copyFileSync(busybox, join(dir, "bin", "busybox"));
  chmodSync(join(dir, "bin", "busybox"), 0o755);
  const applets = (await run(busybox, ["--list"])).toString().split("\n").filter((a) => a && a !== "busybox" && !a.includes("/"));
  for (const a of applets) symlinkSync("busybox", join(dir, "bin", a));
  symlinkSync("bin", join(dir, "sbin"));
  symlinkSync("usr/lib", join(dir, "lib"));
  symlinkSync("usr/lib64", join(dir, "lib64"));
  const script = (from: string, to: string) => {
    copyFileSync(join(guestDir, from), join(dir, to));
    chmodSync(join(dir, to), 0o755);
  };
  script("init", "init");
  script("vmc-agent", "bin/vmc-agent");
  script("vmc-shutdown", "bin/vmc-shutdown");
  script("power-button", "etc/acpi/PWRF/00000080");
  copyFileSync(join(guestDir, "inittab"), join(dir, "etc", "inittab"));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/var/lib/vmc/home:/bin/sh\n");
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\n");
  writeFileSync(join(dir, "etc", "hosts"), "127.0.0.1 localhost\n10.0.2.100 broker\n");
  if (modules.length === 0) return;
  mkdirSync(join(dir, "modules"));
  for (const m of modules) writeFileSync(join(dir, "modules", `${m.name}.ko`), stripModuleSignature(readFileSync(m.path)));
  writeFileSync(join(dir, "modules", "order"), modules.map((m) => `${m.name}\n`).join(""));
}
