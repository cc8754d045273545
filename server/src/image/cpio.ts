/**
 * A cpio "newc" archive (the initramfs format) written directly, so it can hold device nodes and
 * root ownership without root privileges, with fixed timestamps for a reproducible result.
 */
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";

export interface CpioEntry {
  name: string;
  /** Full st_mode: file type and permission bits. */
  mode: number;
  data?: Buffer;
  rdev?: { major: number; minor: number };
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
const hex = (n: number) => n.toString(16).padStart(8, "0");

function header(ino: number, e: CpioEntry, size: number, nameSize: number): Buffer {
  const nlink = (e.mode & 0o170000) === S_IFDIR ? 2 : 1;
  const fields = [ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.rdev?.major ?? 0, e.rdev?.minor ?? 0, nameSize, 0];
  return Buffer.from(`070701${fields.map(hex).join("")}`, "ascii");
}

/** Entries for every file, directory and symlink under `dir`, sorted, named relative to it. */
export function entriesFromDir(dir: string, prefix = ""): CpioEntry[] {
  const out: CpioEntry[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = lstatSync(path);
    const perm = st.mode & 0o7777;
    if (st.isSymbolicLink()) out.push({ name: rel, mode: S_IFLNK | 0o777, data: Buffer.from(readlinkSync(path)) });
    else if (st.isDirectory()) out.push({ name: rel, mode: S_IFDIR | perm }, ...entriesFromDir(path, rel));
    else if (st.isFile()) out.push({ name: rel, mode: S_IFREG | perm, data: readFileSync(path) });
  }
  return out;
}

export function writeCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    offset += b.length;
  };
  const all = [...entries, { name: "TRAILER!!!", mode: 0 }];
  all.forEach((e, i) => {
    const name = Buffer.from(`${e.name}\0`);
    const data = e.data ?? Buffer.alloc(0);
    push(header(e.name === "TRAILER!!!" ? 0 : i + 1, e, data.length, name.length));
    push(name);
    push(pad4(offset));
    push(data);
    push(pad4(offset));
  });
  return Buffer.concat(parts);
}
