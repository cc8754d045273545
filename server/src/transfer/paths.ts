/** Relative paths inside a transfer: the one place that decides what a peer may name. */
import { posix } from "node:path";
import { TransferError } from "./errors";

export interface PathLimits {
  /** Bytes in one name component (Linux NAME_MAX). */
  maxNameBytes: number;
  /** Bytes in a whole relative path (Linux PATH_MAX). */
  maxPathBytes: number;
}

export const DEFAULT_PATH_LIMITS: PathLimits = { maxNameBytes: 255, maxPathBytes: 4096 };

/**
 * Splits a peer-supplied relative path into components, refusing anything that could leave the
 * transfer root: absolute paths, empty, `.` or `..` components, NUL bytes, oversized names.
 * The root itself is `""` (no components).
 */
export function safeComponents(path: string, limits: PathLimits = DEFAULT_PATH_LIMITS): string[] {
  if (path === "") return [];
  if (Buffer.byteLength(path) > limits.maxPathBytes) throw new TransferError("unsafe-path", `path longer than ${limits.maxPathBytes} bytes`);
  if (path.includes("\0")) throw new TransferError("unsafe-path", "path contains a NUL byte");
  if (path.startsWith("/")) throw new TransferError("unsafe-path", `absolute path '${printable(path)}'`);
  const parts = path.split("/");
  for (const part of parts) {
    if (part === "" || part === "." || part === "..") throw new TransferError("unsafe-path", `path '${printable(path)}' has an empty, '.' or '..' component`);
    if (Buffer.byteLength(part) > limits.maxNameBytes) throw new TransferError("unsafe-path", `name longer than ${limits.maxNameBytes} bytes in '${printable(path.slice(0, 80))}...'`);
  }
  return parts;
}

/** True when a symlink at `linkPath` (relative to the root) with text `target` stays inside the root. */
export function symlinkStaysInside(linkPath: string, target: string): boolean {
  if (target === "" || target.startsWith("/") || target.includes("\0")) return false;
  const resolved = posix.normalize(posix.join(posix.dirname(linkPath === "" ? "." : linkPath), target));
  if (linkPath === "") return false;
  return resolved !== ".." && !resolved.startsWith("../") && resolved !== "/" && !resolved.startsWith("/");
}

/** A single safe name (a source's base name). */
export function safeName(name: string): string {
  const parts = safeComponents(name);
  if (parts.length !== 1) throw new TransferError("unsafe-path", `'${printable(name)}' is not a single name`);
  return parts[0]!;
}

/** For error messages: control characters shown escaped, long names cut. */
export function printable(s: string): string {
  const shown = s.length > 200 ? `${s.slice(0, 200)}...` : s;
  return JSON.stringify(shown).slice(1, -1);
}
