/**
 * Builds (or finds in the cache) the bootable guest image from Debian packages, Node and
 * dist/agent.mjs. The recipe lives in guest/; docs/GUEST.md describes the result.
 */
import type { EnsureGuestImageOptions, GuestImage } from "./types";

export type { EnsureGuestImageOptions, GuestImage } from "./types";

/** Returns a verified cached image, building it first when an input changed or the cache entry is broken. */
export async function ensureGuestImage(opts: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  const { buildOrReuse } = await import("./build");
  return buildOrReuse(opts);
}
