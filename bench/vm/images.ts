/** What the VM benches share: a built image read from its directory, and the median of samples. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { BootImage } from "@vmc/server/hypervisors/driver";

/** A built guest image (`$VMC_HOME/images/<id>`, its manifest.json), for same-run A/Bs of images. */
export function imageFromDir(dir: string): BootImage {
  const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as { id: string; cmdline: string; files: Record<string, { name: string }> };
  const file = (key: string) => join(dir, m.files[key]!.name);
  return { id: m.id, kernel: file("kernel"), initrd: file("initrd"), rootfs: file("rootfs"), baseDisk: file("baseDisk"), cmdline: m.cmdline };
}

/** The middle sample (the upper one of an even count); NaN for none. */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
