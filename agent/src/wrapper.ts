/**
 * Per-command resource accounting (see docs/AGENT.md, "Resources").
 *
 * The wrapper is spawned before the command may run (while the agent's journal record is made
 * durable) and starts it when the agent writes `go` on fd 3; when fd 3 closes first it exits 99
 * without running anything.
 *
 * Each command runs under a tiny `/bin/sh` wrapper that the agent spawns as the leader of a new
 * session and process group (Node's `detached`). The wrapper starts the command in the
 * background, waits for that one child and then prints `times`: its RUSAGE_CHILDREN, which is
 * exactly the CPU of the command's process tree (every descendant that was waited for) and
 * nothing else — other commands run under other wrappers. Results travel on fd 3, never mixed
 * with the command's own stdout/stderr:
 *   `pid <pid>`            at once (the command's own pid, in the wrapper's process group)
 *   `<times output>`       after it ended (second line: children user and system time)
 *   `status <n>`           the `$?` of `wait` (128+N when killed by signal N)
 *
 * The wrapper ignores SIGTERM and SIGHUP once the command is forked (the command keeps the
 * default dispositions), so a SIGTERM to the whole group stops the command and every
 * descendant while the wrapper lives on to report. SIGKILL goes to the command's pid first;
 * the group gets it once the wrapper has reported (executor.ts).
 * Costs one `sh` (dash: ~1 ms) and one fork per command: no `setsid` program to exec, no
 * native code, works in a minimal guest.
 */
import { constants as osConstants } from "node:os";

export const WRAPPER_SCRIPT = [
  "read -r go <&3 || exit 99",
  "exec 4<&0 </dev/null",
  '"$@" <&4 4<&- 3>&- &',
  "p=$!",
  "trap '' TERM HUP",
  "exec 4<&-",
  'echo "pid $p" >&3',
  "wait $p",
  "c=$?",
  "times >&3",
  'echo "status $c" >&3',
].join("\n");

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
