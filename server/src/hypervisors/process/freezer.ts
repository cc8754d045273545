/**
 * Freezing a process tree: a cgroup v2 `cgroup.freeze` when a writable cgroup2 hierarchy exists
 * (the whole tree, also processes that left the session), else SIGSTOP/SIGCONT of every
 * descendant found in /proc.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** The cgroup2 mount point, when there is one. */
export function cgroup2Root(): string | undefined {
  try {
    for (const line of readFileSync("/proc/self/mounts", "utf8").split("\n")) {
      const [, mountPoint, type] = line.split(" ");
      if (type === "cgroup2" && mountPoint) return mountPoint;
    }
  } catch {
    // no /proc
  }
  return undefined;
}

/** Creates (or finds) the VM's cgroup; undefined when cgroups with a freezer are not usable here. */
export function vmCgroup(key: string): string | undefined {
  const root = cgroup2Root();
  if (!root) return undefined;
  const dir = join(root, "vmc", key);
  try {
    mkdirSync(dir, { recursive: true });
    return existsSync(join(dir, "cgroup.freeze")) ? dir : undefined;
  } catch {
    return undefined;
  }
}

export function removeCgroup(dir: string | undefined): void {
  if (!dir) return;
  for (const d of [dir, dirname(dir)]) {
    try {
      // The shared parent goes too once the last VM's group is gone.
      rmdirSync(d);
    } catch {
      return;
    }
  }
}

export function cgroupFrozen(dir: string): boolean {
  try {
    return /^frozen 1$/m.test(readFileSync(join(dir, "cgroup.events"), "utf8"));
  } catch {
    return false;
  }
}

export function setCgroupFrozen(dir: string, frozen: boolean): void {
  writeFileSync(join(dir, "cgroup.freeze"), frozen ? "1" : "0");
}

/** `root` and every process below it, parents first. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  return out;
}

export function signalTree(root: number, signal: NodeJS.Signals): void {
  for (const pid of descendants(root)) {
    try {
      process.kill(pid, signal);
    } catch {
      // exited meanwhile
    }
  }
}

/** True when the process is stopped by a signal (state T). */
export function processStopped(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "T";
  } catch {
    return false;
  }
}
