/** Helpers shared by the transfer tests: temp dirs, file digests, tree listings. */
import { createHash } from "node:crypto";
import { createReadStream, lstatSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function tempDir(prefix = "vmc-xfer-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

/** Every entry under `root`: relative path → kind, mode, mtime (s), size, link target. */
export function listTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (abs: string, rel: string) => {
    const st = lstatSync(abs);
    const mtime = Math.floor(st.mtimeMs / 1000);
    if (st.isSymbolicLink()) out[rel] = `link -> ${readlinkSync(abs)}`;
    else if (st.isFile()) out[rel] = `file ${(st.mode & 0o777).toString(8)} ${st.size} ${mtime}`;
    else if (st.isDirectory()) {
      out[rel] = `dir ${(st.mode & 0o777).toString(8)} ${mtime}`;
      for (const n of readdirSync(abs).sort()) visit(join(abs, n), rel ? `${rel}/${n}` : n);
    }
  };
  visit(root, "");
  return out;
}

/** Files whose name marks a partial transfer, anywhere under `root`. */
export function partialsUnder(root: string): string[] {
  const found: string[] = [];
  const visit = (abs: string) => {
    for (const n of readdirSync(abs)) {
      const p = join(abs, n);
      if (n.includes("vmcpart")) found.push(p);
      const st = lstatSync(p);
      if (st.isDirectory()) visit(p);
    }
  };
  visit(root);
  return found;
}

/** Polls `check` until it returns true, failing after `ms`. For effects another process makes on disk. */
export async function eventually(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
