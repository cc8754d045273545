/**
 * Per-command resource accounting (see docs/AGENT.md, "Resources").
 *
 * Each command runs under a tiny `/bin/sh` wrapper that starts it in a NEW SESSION (`setsid`,
 * so it has its own process group to kill without killing the wrapper), waits for that one
 * child, and then prints `times`: the wrapper's RUSAGE_CHILDREN, which is exactly the CPU of
 * the command's process tree (every descendant that was waited for) and nothing else — other
 * commands run under other wrappers. Results travel on fd 3, never mixed with the command's
 * own stdout/stderr:
 *   `pid <pid>`            at once (the pid is also the command's process group id)
 *   `<times output>`       after it ended (second line: children user and system time)
 *   `status <n>`           the `$?` of `wait` (128+N when killed by signal N)
 * Costs one `sh` (dash: ~1 ms) per command; no native code, works in a minimal guest.
 */
import { accessSync, constants } from "node:fs";
import { constants as osConstants } from "node:os";

export const WRAPPER_SCRIPT = [
  "s=$1; shift",
  "exec 4<&0 </dev/null",
  '$s "$@" <&4 4<&- 3>&- &',
  "p=$!",
  "exec 4<&-",
  'echo "pid $p" >&3',
  "wait $p",
  "c=$?",
  "times >&3",
  'echo "status $c" >&3',
].join("\n");

let setsidCache: string | undefined | null = null;

/** The `setsid` command to prefix (util-linux or busybox), or "" when there is none. */
export function setsidCommand(): string {
  if (setsidCache !== null) return setsidCache ?? "";
  const executable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  setsidCache = ["/usr/bin/setsid", "/bin/setsid", "/usr/sbin/setsid", "/sbin/setsid"].find(executable);
  if (!setsidCache) {
    const busybox = ["/bin/busybox", "/usr/bin/busybox"].find(executable);
    setsidCache = busybox ? `${busybox} setsid` : undefined;
  }
  return setsidCache ?? "";
}

export interface WrapperReport {
  pid?: number;
  cpuUserMs?: number;
  cpuSystemMs?: number;
  status?: number;
}

/** Parses what the wrapper wrote on fd 3 so far. */
export function parseWrapperReport(text: string): WrapperReport {
  const report: WrapperReport = {};
  const pid = /^pid (\d+)$/m.exec(text);
  if (pid) report.pid = Number(pid[1]);
  const status = /^status (\d+)$/m.exec(text);
  if (status) report.status = Number(status[1]);
  const times = [...text.matchAll(/(\d+)m\s*([\d.]+)s/g)].map((m) => (Number(m[1]) * 60 + Number(m[2])) * 1000);
  if (times.length >= 4) {
    report.cpuUserMs = Math.round(times[2] ?? 0);
    report.cpuSystemMs = Math.round(times[3] ?? 0);
  }
  return report;
}

const signalNames = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

/** `$?` of a shell `wait`: 128+N for signal N (ambiguous with `exit 128+N`, documented). */
export function decodeShellStatus(status: number): { exitCode: number | null; signal: string | null } {
  if (status > 128 && signalNames.has(status - 128)) return { exitCode: null, signal: signalNames.get(status - 128) ?? null };
  return { exitCode: status, signal: null };
}
