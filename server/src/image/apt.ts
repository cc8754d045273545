/** Debian packages for the image: apt's candidate version, fetched with `apt-get download` into a cache. */
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { run } from "./run";

export interface DebPackage {
  name: string;
  version: string;
  sha256: string;
  depends: string;
}

/** apt's candidate for `name`: version, SHA256 and dependencies, without downloading anything. */
export async function resolveDeb(name: string): Promise<DebPackage> {
  let text: string;
  try {
    text = (await run("apt-cache", ["show", "--no-all-versions", name])).toString();
  } catch (e) {
    throw new Error(`Debian package '${name}' is unknown to apt (run 'apt-get update'): ${(e as Error).message}`);
  }
  const field = (f: string) => new RegExp(`^${f}: (.*)$`, "m").exec(text)?.[1]?.trim();
  const version = field("Version");
  const sha256 = field("SHA256");
  if (!version || !sha256) throw new Error(`apt-cache show ${name}: no Version/SHA256 (run 'apt-get update')`);
  return { name, version, sha256, depends: field("Depends") ?? "" };
}

/** The real kernel package behind Debian's `linux-image-<flavour>` metapackage. */
export async function resolveKernel(meta: string): Promise<DebPackage> {
  const m = await resolveDeb(meta);
  const target = /(linux-image-[0-9][^\s,(]*)/.exec(m.depends)?.[1];
  return target ? resolveDeb(target) : m;
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
