/** The sender's plan: the entries of a file or tree, listed (lstat, never followed) before sending. */
import { lstat, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import type { EntryFrame } from "@vmc/protocol/transfer";
import { TransferError } from "./errors";

export interface PlannedEntry {
  frame: EntryFrame;
  /** Absolute path on this side. */
  abs: string;
  /** A file with no data blocks at all (one hole): sent as ZERO frames without reading it. */
  allHole?: boolean;
}

export interface TransferPlan {
  entries: PlannedEntry[];
  bytes: number;
  rootKind: EntryFrame["kind"];
}

export const DEFAULT_MAX_PLAN_ENTRIES = 1_000_000;

/** Lists `source` (a file, a symlink, or with `recursive` a directory tree). */
export async function planTree(source: string, recursive: boolean, maxEntries = DEFAULT_MAX_PLAN_ENTRIES): Promise<TransferPlan> {
  const entries: PlannedEntry[] = [];
  let bytes = 0;
  const visit = async (abs: string, rel: string): Promise<void> => {
    if (entries.length >= maxEntries) throw new TransferError("limit", `more than ${maxEntries} entries under ${source}`);
    const st = await lstat(abs);
    const base = { i: entries.length, path: rel, mode: st.mode & 0o7777, mtimeMs: Math.max(0, Math.floor(st.mtimeMs)) };
    if (st.isSymbolicLink()) {
      entries.push({ abs, frame: { ...base, kind: "symlink", target: await readlink(abs) } });
    } else if (st.isFile()) {
      entries.push({ abs, frame: { ...base, kind: "file", size: st.size }, allHole: st.size > 0 && st.blocks === 0 });
      bytes += st.size;
    } else if (st.isDirectory()) {
      if (rel === "" && !recursive) throw new TransferError("io", `${source} is a directory (copy it with -r)`);
      entries.push({ abs, frame: { ...base, kind: "dir" } });
      const names = (await readdir(abs)).sort();
      for (const name of names) await visit(join(abs, name), rel === "" ? name : `${rel}/${name}`);
    } else if (rel === "") {
      throw new TransferError("io", `${source} is not a file, directory or symlink`);
    }
    // sockets, fifos and devices inside a tree are skipped: they have no content to copy
  };
  await visit(source, "");
  const root = entries[0];
  if (!root) throw new TransferError("io", `nothing to send at ${source}`);
  return { entries, bytes, rootKind: root.frame.kind };
}
