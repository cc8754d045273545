/** Kernel modules for the initramfs: the wanted ones plus their dependencies, in load order. */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** `name -> path` of every module under lib/modules/<ver>/kernel (names with '-' folded to '_'). */
function indexModules(dir: string, into = new Map<string, string>()): Map<string, string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) indexModules(p, into);
    else if (e.name.endsWith(".ko")) into.set(e.name.slice(0, -3).replace(/-/g, "_"), p);
  }
  return into;
}

/** The `depends=` field of a module's .modinfo section (NUL-separated key=value strings). */
function dependsOf(ko: string): string[] {
  const data = readFileSync(ko);
  const at = data.indexOf("\0depends=");
  if (at < 0) return [];
  const end = data.indexOf(0, at + 1);
  const value = data.subarray(at + "\0depends=".length, end).toString();
  return value ? value.split(",").map((d) => d.replace(/-/g, "_")) : [];
}

/**
 * Resolves `wanted` against the modules tree of an extracted kernel package: built-in modules
 * are dropped, missing dependencies added, and the result ordered so each comes after its deps.
 */
export function moduleLoadOrder(modulesDir: string, wanted: string[]): { name: string; path: string }[] {
  const builtin = new Set(
    readFileSync(join(modulesDir, "modules.builtin"), "utf8")
      .split("\n")
      .map((l) => l.replace(/^.*\//, "").replace(/\.ko$/, "").replace(/-/g, "_"))
      .filter(Boolean),
  );
  const all = indexModules(join(modulesDir, "kernel"));
  const order: { name: string; path: string }[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    const n = name.replace(/-/g, "_");
    if (seen.has(n) || builtin.has(n)) return;
    const path = all.get(n);
    if (!path) throw new Error(`kernel module '${n}' not found${chain.length ? ` (needed by ${chain.join(" <- ")})` : ""}`);
    seen.add(n);
    for (const d of dependsOf(path)) visit(d, [n, ...chain]);
    order.push({ name: n, path });
  };
  for (const w of wanted) visit(w, []);
  return order;
}

const SIG_MAGIC = Buffer.from("~Module signature appended~\n", "latin1");

/**
 * A module without its appended signature (PKCS#7 blob, the 12-byte `struct module_signature`
 * whose last field is the blob's big-endian length, then the magic string): the kernel then skips
 * the signature check (hashing the module, an RSA verification) at load, ~50 ms of guest CPU for
 * the twelve modules under TCG. Signatures are not enforced (`module.sig_enforce` off), so an
 * unsigned module loads and taints the kernel with `E`. Anything else is returned as it is.
 */
export function stripModuleSignature(ko: Buffer): Buffer {
  if (ko.length < SIG_MAGIC.length + 12 || !ko.subarray(ko.length - SIG_MAGIC.length).equals(SIG_MAGIC)) return ko;
  const info = ko.length - SIG_MAGIC.length - 12;
  const sigLen = ko.readUInt32BE(info + 8);
  const signer = ko[info + 3]! + ko[info + 4]!; // signer_len, key_id_len (0 for PKCS#7)
  const end = info - sigLen - signer;
  return end > 0 ? ko.subarray(0, end) : ko;
}
