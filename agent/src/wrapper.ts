/**
 * Per-command resource accounting (see docs/AGENT.md, "Resources").
 *
 * Each command runs under a tiny `/bin/sh` wrapper that the agent spawns as the leader of a new
 * session and process group (Node's `detached`). The wrapper waits on fd 3 for its orders, then
 * starts the command in the background, waits for that one child and prints `times`: its
 * RUSAGE_CHILDREN, which is exactly the CPU of the command's process tree (every descendant that
 * was waited for) and nothing else — other commands run under other wrappers.
 *
 * Orders on fd 3, one of:
 *   `go`        run the argv the wrapper was spawned with (in the env and cwd it was spawned with);
 *   `run N`     then N lines of shell (see {@link commandScript}): `cd`, `export`s and `set --`
 *               with every word single-quoted, so nothing in them is expanded. This is how a
 *               wrapper spawned *before* its command was known runs it (wrapper-pool.ts);
 *   EOF         exit 99 without running anything (the command was never journalled, or the
 *               agent is gone).
 * Results travel on fd 3, never mixed with the command's own stdout/stderr:
 *   `pid <pid>`            at once (the command's own pid, in the wrapper's process group)
 *   `<times output>`       after it ended (second line: children user and system time)
 *   `status <n>`           the `$?` of `wait` (128+N when killed by signal N)
 *   `fail <reason>`        the command could not be started (its cwd is gone)
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
  // Lines are read one at a time (dash reads a pipe byte by byte) and joined back with their newlines.
  'case $go in "run "*) n=${go#run } s=; while [ "$n" -gt 0 ]; do IFS= read -r l <&3 || exit 99; s="$s$l',
  '"; n=$((n - 1)); done; eval "$s";; esac',
  "exec 4<&0 </dev/null",
  '"$@" <&4 4<&- 3>&- &',
  "p=$!",
  "trap '' TERM HUP",
  "exec 4<&-",
  'echo "pid $p" >&3',
  'wait "$p"',
  "c=$?",
  "times >&3",
  'echo "status $c" >&3',
].join("\n");

export interface WrapperReport {
  pid?: number;
  cpuUserMs?: number;
  cpuSystemMs?: number;
  status?: number;
  /** The command could not be started (`cwd`: its cwd could not be entered). */
  fail?: string;
}

/** Parses what the wrapper wrote on fd 3 so far. */
export function parseWrapperReport(text: string): WrapperReport {
  const report: WrapperReport = {};
  const pid = /^pid (\d+)$/m.exec(text);
  if (pid) report.pid = Number(pid[1]);
  const status = /^status (\d+)$/m.exec(text);
  if (status) report.status = Number(status[1]);
  const fail = /^fail (\w+)$/m.exec(text);
  if (fail) report.fail = fail[1];
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

/** Larger orders go to a wrapper spawned with its argv: dash reads a pipe a byte per system call. */
const MAX_ORDER_BYTES = 16 * 1024;
const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `'…'`, each `'` inside closed, escaped and reopened: the shell expands nothing in it. */
function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `run N` order that makes a waiting wrapper run `argv` in `cwd` (absolute) with `env` added
 * to its own environment. Undefined when the command cannot be said that way (an env name the
 * shell cannot `export`, or an order too long to be worth reading a byte at a time): such a
 * command gets a wrapper spawned with its argv, env and cwd instead.
 */
export function runOrder(argv: readonly string[], env: Readonly<Record<string, string>>, cwd: string | undefined): string | undefined {
  const lines: string[] = [];
  if (cwd !== undefined) lines.push(`cd -P -- ${quote(cwd)} || { echo "fail cwd" >&3; exit 98; }`);
  for (const [name, value] of Object.entries(env)) {
    if (!SHELL_NAME.test(name)) return undefined;
    lines.push(`export ${name}=${quote(value)}`);
  }
  lines.push(`set -- ${argv.map(quote).join(" ")}`);
  const script = lines.join("\n");
  if (Buffer.byteLength(script) > MAX_ORDER_BYTES) return undefined;
  return `run ${script.split("\n").length}\n${script}\n`;
}
