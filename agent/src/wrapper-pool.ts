/**
 * Spawning command wrappers (wrapper.ts), and keeping one spawned ahead of the next command.
 *
 * Node's `spawn()` forks the whole agent process and blocks the event loop until the child has
 * exec'd: 2–3 ms from a small process, ~10 ms from one hosting hundreds of agents. A wrapper
 * spawned *before* its command arrives takes that off the command's path: the command starts
 * when its `run` order is written to a process that is already waiting (see docs/AGENT.md).
 *
 * Each agent keeps one such wrapper. A used one is replaced once no command of this process is in
 * flight (its result is out): the spawn blocks the event loop, which would hold up a running
 * command's output and result, and a fan-out's commands would wait behind their own refills.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { WRAPPER_SCRIPT } from "./wrapper";

/** A spawned wrapper and its start time (see {@link processStartTime}), read once it exists. */
export interface Wrapper {
  child: ChildProcess;
  startTime: string | undefined;
}

/** Field 22 of /proc/<pid>/stat: when the process started, so a reused pid is never killed by mistake. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** Spawns a wrapper, which waits for its order on fd 3; `argv` is run on `go` (see wrapper.ts). */
export function spawnWrapper(argv: readonly string[] = [], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  return spawn("/bin/sh", ["-c", WRAPPER_SCRIPT, "vmc-cmd", ...argv], { ...options, detached: true, stdio: ["pipe", "pipe", "pipe", "pipe"] });
}

/**
 * Spawns run one per event-loop turn, in order: `spawn()` blocks the loop for the fork and exec,
 * so a burst of commands must not starve timers (presence heartbeats) and I/O for its whole length.
 */
const spawnQueue: Array<() => void> = [];
export function spawnSoon(job: () => void): void {
  spawnQueue.push(job);
  if (spawnQueue.length === 1) setImmediate(spawnNext);
}
function spawnNext(): void {
  const job = spawnQueue.shift();
  try {
    job?.();
  } finally {
    if (spawnQueue.length) setImmediate(spawnNext);
  }
}

/** Commands of every agent in this process between start and result. */
let inFlight = 0;
const wanting = new Set<WrapperPool>();
let refillQueued = false;

/** Counts a command as in flight; call the returned function (once) when it is over. */
export function commandInFlight(): () => void {
  inFlight++;
  let over = false;
  return () => {
    if (over) return;
    over = true;
    inFlight--;
    refillWhenQuiet();
  };
}

function refillWhenQuiet(): void {
  if (refillQueued || inFlight > 0 || wanting.size === 0) return;
  refillQueued = true;
  spawnSoon(() => {
    refillQueued = false;
    if (inFlight > 0) return; // a command came meanwhile: its end calls again
    const pool = wanting.values().next().value;
    if (pool) {
      wanting.delete(pool);
      pool.fill();
    }
    refillWhenQuiet();
  });
}

/** One agent's wrapper spawned ahead of its next command. */
export class WrapperPool {
  private idle: Wrapper | undefined;
  private closed = false;
  private markFilled!: () => void;
  /** Resolves once a wrapper was first spawned ahead (or the pool closed). */
  readonly filled = new Promise<void>((resolve) => (this.markFilled = resolve));
  /** A waiting wrapper that died is replaced after the next command, not at once (no respawn loop). */
  private readonly dropIdle = () => {
    this.idle = undefined;
  };

  /** Asks for a wrapper to be spawned ahead, once this process is quiet. */
  replenish(): void {
    if (this.closed || this.idle || wanting.has(this)) return;
    wanting.add(this);
    refillWhenQuiet();
  }

  /** The waiting wrapper, now the caller's; undefined when there is none (spawn one then). */
  take(): Wrapper | undefined {
    const wrapper = this.idle;
    this.idle = undefined;
    wrapper?.child.off("exit", this.dropIdle);
    return wrapper;
  }

  /** Ends the waiting wrapper (its fd 3 closes: it exits without running anything). */
  close(): void {
    this.closed = true;
    this.markFilled();
    wanting.delete(this);
    const child = this.idle?.child;
    this.idle = undefined;
    if (!child) return;
    child.off("exit", this.dropIdle);
    for (const stream of child.stdio) stream?.destroy();
  }

  /** @internal called by the refill queue. */
  fill(): void {
    if (this.closed || this.idle) return;
    let child: ChildProcess;
    try {
      child = spawnWrapper();
    } catch {
      return; // out of processes or memory: commands spawn their own wrapper
    }
    child.on("error", () => undefined);
    for (const stream of child.stdio) stream?.on("error", () => undefined);
    if (child.pid === undefined) return;
    // Read now, while nothing waits: the journal keeps it to kill an orphan after a crash.
    this.idle = { child, startTime: processStartTime(child.pid) };
    child.once("exit", this.dropIdle);
    this.markFilled();
  }
}
