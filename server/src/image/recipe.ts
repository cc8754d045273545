/** guest/recipe.json and the other recipe files: where they are and what they say. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Where the guest kernel comes from: built from Debian's kernel source package with a config
 * fragment of guest/ (the default: boots ~1.5 s faster under TCG, needs a compiler and 6-13 min
 * once), or Debian's binary kernel package and the modules to load from it.
 */
export type KernelRecipe =
  | { kind: "source"; package: string; /** File in guest/ with the options added to tinyconfig. */ config: string }
  | { kind: "binary"; package: string; /** Kernel modules to load at boot (their dependencies are added). */ modules: string[] };

export interface Recipe {
  kernel: KernelRecipe;
  busyboxPackage: string;
  libraryPackages: string[];
  node: { package: string; version: string; integrity: string };
  cmdline: string;
  stateDiskMiB: number;
}

/** Files of guest/ that are inputs of the image's hash; all but kernel.config are copied into it. */
export const RECIPE_FILES = ["recipe.json", "kernel.config", "init", "inittab", "vmc-agent", "vmc-shutdown", "power-button", "agent-loader.cjs"] as const;

/** The checkout (or installed package) root: the nearest ancestor holding guest/recipe.json. */
export function projectRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = resolve(from); ; dir = dirname(dir)) {
    if (existsSync(join(dir, "guest", "recipe.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`guest/recipe.json not found above ${from}`);
  }
}

function strings(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string" && /^[a-z0-9][a-z0-9+.:_-]*$/.test(s))) throw new Error(`recipe: ${what} must be a list of names`);
  return v as string[];
}

function name(v: unknown, what: string): string {
  return strings([v], what)[0] as string;
}

function kernel(v: unknown): KernelRecipe {
  const k = (v ?? {}) as Record<string, unknown>;
  if (typeof k.source === "string" && k.package === undefined) {
    if (typeof k.config !== "string" || !(RECIPE_FILES as readonly string[]).includes(k.config)) throw new Error(`recipe: kernel.config must name one of ${RECIPE_FILES.join(", ")}`);
    return { kind: "source", package: name(k.source, "kernel.source"), config: k.config };
  }
  if (typeof k.package === "string" && k.source === undefined) return { kind: "binary", package: name(k.package, "kernel.package"), modules: strings(k.modules, "kernel.modules") };
  throw new Error('recipe: kernel must be {"source": "<linux-source package>", "config": "<file>"} or {"package": "<linux-image package>", "modules": [...]}');
}

export function loadRecipe(guestDir: string): Recipe {
  const raw = JSON.parse(readFileSync(join(guestDir, "recipe.json"), "utf8")) as Record<string, unknown>;
  const node = raw.node as Record<string, unknown> | undefined;
  if (!node || typeof node.integrity !== "string" || !node.integrity.startsWith("sha512-")) throw new Error("recipe: node.integrity must be an npm sha512 integrity");
  if (typeof raw.cmdline !== "string") throw new Error("recipe: cmdline must be a string");
  const stateDiskMiB = Number(raw.stateDiskMiB);
  if (!Number.isInteger(stateDiskMiB) || stateDiskMiB < 64) throw new Error("recipe: stateDiskMiB must be an integer >= 64");
  return {
    kernel: kernel(raw.kernel),
    busyboxPackage: name(raw.busyboxPackage, "busyboxPackage"),
    libraryPackages: strings(raw.libraryPackages, "libraryPackages"),
    node: { package: name(node.package, "node.package"), version: name(node.version, "node.version"), integrity: node.integrity },
    cmdline: raw.cmdline,
    stateDiskMiB,
  };
}
