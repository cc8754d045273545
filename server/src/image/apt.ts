/** Debian packages for the image: apt's candidate version, fetched with `apt-get download` into a cache. */
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { run } from "./run";

export interface DebPackage {
  name: string;
  version: string;
  sha256: string;
  depends: string;
}

function parseStanzas(text: string): Map<string, DebPackage> {
  const found = new Map<string, DebPackage>();
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (f: string) => new RegExp(`^${f}: (.*)$`, "m").exec(stanza)?.[1]?.trim();
    const name = field("Package");
    const version = field("Version");
    const sha256 = field("SHA256");
    if (name && version && sha256 && !found.has(name)) found.set(name, { name, version, sha256, depends: field("Depends") ?? "" });
  }
  return found;
}

/** apt's candidates for `names` (version, SHA256, dependencies) with one `apt-cache show`, nothing downloaded. */
async function showDebs(names: string[]): Promise<DebPackage[]> {
  let text: string;
  try {
    text = (await run("apt-cache", ["show", "--no-all-versions", ...names])).toString();
  } catch (e) {
    throw new Error(`apt does not know ${names.join(", ")} (run 'apt-get update'): ${(e as Error).message}`);
  }
  const found = parseStanzas(text);
  return names.map((n) => {
    const pkg = found.get(n);
    if (!pkg) throw new Error(`apt-cache show ${n}: no candidate with Version/SHA256 (run 'apt-get update')`);
    return pkg;
  });
}

/**
 * What apt would download now: changes only when the package lists or the dpkg database do. Where
 * APT keeps no binary cache (pkgcache.bin disabled, as in container images) one `apt-cache show`
 * costs seconds, so answers are remembered in `cacheFile` under a stamp of those files.
 */
function aptStamp(): string {
  const parts: string[] = [];
  const lists = "/var/lib/apt/lists";
  for (const name of existsSync(lists) ? readdirSync(lists).sort() : []) {
    const st = statSync(join(lists, name), { throwIfNoEntry: false });
    if (st?.isFile()) parts.push(`${name}:${st.size}:${st.mtimeMs}`);
  }
  const status = statSync("/var/lib/dpkg/status", { throwIfNoEntry: false });
  parts.push(`status:${status?.size}:${status?.mtimeMs}`);
  return createHash("sha256").update(parts.join("\n")).digest("hex");
}

/**
 * Resolves the kernel metapackage to the real kernel package and every other name to apt's
 * candidate. Returns `[kernel, ...others]`.
 */
export async function resolveDebs(kernelMeta: string, others: string[], cacheFile: string): Promise<DebPackage[]> {
  const key = `${aptStamp()}|${kernelMeta}|${others.join(",")}`;
  try {
    const cached = JSON.parse(readFileSync(cacheFile, "utf8")) as { key: string; debs: DebPackage[] };
    if (cached.key === key) return cached.debs;
  } catch {
    // no or unreadable cache: resolve again
  }
  const [meta, ...rest] = await showDebs([kernelMeta, ...others]);
  const target = /(linux-image-[0-9][^\s,(]*)/.exec(meta!.depends)?.[1];
  const kernel = target ? (await showDebs([target]))[0]! : meta!;
  const debs = [kernel, ...rest];
  mkdirSync(dirname(cacheFile), { recursive: true });
  const tmp = `${cacheFile}.${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ key, debs }));
  renameSync(tmp, cacheFile);
  return debs;
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path).on("data", (d) => h.update(d)).on("error", reject).on("end", () => resolve(h.digest("hex")));
  });
}

/** Path of the cached .deb, downloading it (and checking its SHA256 against apt's) when missing. */
export async function fetchDeb(pkg: DebPackage, cacheDir: string): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `${pkg.name}_${pkg.version.replace(/:/g, "%3a")}_${pkg.sha256.slice(0, 12)}.deb`);
  if (existsSync(file) && (await sha256File(file)) === pkg.sha256) return file;
  const tmp = join(cacheDir, `.dl-${process.pid}-${pkg.name}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    await run("apt-get", ["download", "-q", `${pkg.name}=${pkg.version}`], { cwd: tmp });
    const got = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!got) throw new Error(`apt-get download ${pkg.name} produced no .deb`);
    const sum = await sha256File(join(tmp, got));
    if (sum !== pkg.sha256) throw new Error(`${got}: SHA256 ${sum} does not match apt's ${pkg.sha256}`);
    renameSync(join(tmp, got), file);
    return file;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
