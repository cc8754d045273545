/**
 * Runs one CMD_RUN: spawns it under the accounting wrapper (see wrapper.ts), feeds stdin,
 * streams stdout/stderr as CMD_OUTPUT with backpressure, enforces the timeout, obeys cancel,
 * and settles `done` with the CMD_RESULT.
 */
import type { ChildProcess } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { Readable, Writable } from "node:stream";
import type { CmdInput, CmdOutput, CmdResult, CmdRun, CmdStatus } from "@vmc/protocol/bus";
import type { BusLogger } from "@vmc/server/bus/client";
import { trackPeakRss } from "./proc-sampler";
import { RunningTimeout } from "./running-clock";
import { TailBuffer } from "./tail-buffer";
import { decodeShellStatus, parseWrapperReport, runOrder } from "./wrapper";
import { commandInFlight, processStartTime, spawnSoon, spawnWrapper, type Wrapper, type WrapperPool } from "./wrapper-pool";

/** Output is sent once this much is pending for a stream... */
const COALESCE_BYTES = 64 * 1024;
/** ...or this long after the first pending byte. */
const COALESCE_MS = 5;
/** Raw bytes per CMD_OUTPUT (base64 makes it 4/3 of that, below the schema's 2 MiB). */
const MAX_CHUNK_BYTES = 256 * 1024;
/** Output not yet confirmed by the broker (e.g. while reconnecting) before the child is paused. */
const UNCONFIRMED_HIGH_BYTES = 4 * 1024 * 1024;
/** How long to wait for stdout/stderr to close after the command's wrapper exited (a daemonised child may hold them). */
const STREAM_GRACE_MS = 1_000;
/** SIGTERM first; SIGKILL this long after. */
const KILL_GRACE_MS = 1_000;
const MAX_PENDING_INPUTS = 64;

/** Where CMD_OUTPUT goes: at least once, in order (see output-window.ts). */
export interface OutputSink {
  send(message: CmdOutput, rawBytes: number): void;
  readonly unconfirmedBytes: number;
  /** Resolves once at most `limit` raw bytes are unconfirmed (or the sink gave up). */
  whenBelow(limit: number): Promise<void>;
}

export interface CommandIo {
  output: OutputSink;
  /** True while the bus socket's write buffer is above its high-water mark. */
  congested(): boolean;
  /** Resolves when the bus socket's write buffer is low again (or the link dropped). */
  drained(): Promise<void>;
  log: BusLogger;
}

interface StreamState {
  name: "stdout" | "stderr";
  offset: number;
  pending: Buffer[];
  pendingBytes: number;
  tail: TailBuffer;
  readable: Readable | null;
}

export class RunningCommand {
  /** The CMD_RESULT, once the command is over. Never rejects. */
  readonly done: Promise<CmdResult>;
  /** Pid of the command's wrapper (= its process group id), once spawned. */
  pid: number | undefined;
  /** Pid of the command itself (the wrapper's child), once the wrapper said it. */
  private commandPid: number | undefined;
  private settle!: (result: CmdResult) => void;
  /** Settles once start() has spawned the command (or given up). */
  private readonly spawned: Promise<void>;
  private markSpawned!: () => void;
  private child: ChildProcess | undefined;
  private readonly streams: StreamState[];
  private seq = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private paused = false;
  private endReason: CmdStatus | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: RunningTimeout | undefined;
  private report = "";
  private startedAt: number | null = null;
  private startedMono = 0;
  private stopTracking: (() => number) | undefined;
  private nextInputSeq = 0;
  private readonly heldInputs = new Map<number, CmdInput>();
  private finished = false;
  /** The wrapper was told to start the command. */
  private released = false;
  /** Ends this command's count in {@link commandInFlight}. */
  private readonly over = commandInFlight();

  constructor(
    private readonly agentId: string,
    private readonly cmd: CmdRun,
    private readonly io: CommandIo,
    /** The agent's wrapper spawned ahead of time, used when the command can be ordered to it. */
    private readonly wrappers?: WrapperPool,
  ) {
    this.done = new Promise((resolve) => (this.settle = resolve));
    this.spawned = new Promise((resolve) => (this.markSpawned = resolve));
    void this.done.then(() => this.ended());
    this.streams = (["stdout", "stderr"] as const).map((name) => ({
      name,
      offset: 0,
      pending: [],
      pendingBytes: 0,
      tail: new TailBuffer(cmd.tailBytes),
      readable: null,
    }));
  }

  /**
   * Gets the command's wrapper at once (the agent's waiting one, else a new spawn); the command
   * itself starts when `go` resolves (the agent passes the journal record's durability, so the
   * fsync and the process start overlap and nothing runs before it is recorded). When `go`
   * rejects, nothing runs: see {@link discard}. `onPid` is called with the wrapper's pid (= the
   * process group) and its start time.
   */
  start(onPid?: (pid: number, startTime: string | undefined) => void, go: Promise<unknown> = Promise.resolve()): void {
    const problem = preflight(this.cmd, this.cmd.env.PATH ?? process.env.PATH);
    if (problem) {
      this.finishEarly("failedToStart", problem);
      return this.markSpawned();
    }
    const argv = this.cmd.shell ? ["/bin/sh", "-c", ...this.cmd.argv] : this.cmd.argv;
    const cwd = this.cmd.cwd === undefined ? undefined : resolve(this.cmd.cwd);
    const order = runOrder(argv, this.cmd.env, cwd);
    const waiting = order === undefined ? undefined : this.wrappers?.take();
    if (order !== undefined && waiting) {
      this.attach(waiting, order, go, onPid);
      return this.markSpawned();
    }
    spawnSoon(() => {
      try {
        if (this.finished) return;
        if (this.endReason) return this.finishEarly(this.endReason, `${this.endReason === "cancelled" ? "cancelled" : "timed out"} before it started`);
        let child: ChildProcess;
        try {
          child = spawnWrapper(argv, { cwd, env: { ...process.env, ...this.cmd.env } });
        } catch (e) {
          return this.finishEarly("failedToStart", e instanceof Error ? e.message : String(e));
        }
        this.attach({ child, startTime: child.pid === undefined ? undefined : processStartTime(child.pid) }, "go\n", go, onPid);
      } finally {
        this.markSpawned();
      }
    });
  }

  /** Takes over a wrapper that waits for `order` (see wrapper.ts), given once `go` resolves. */
  private attach({ child, startTime }: Wrapper, order: string, go: Promise<unknown>, onPid?: (pid: number, startTime: string | undefined) => void): void {
    this.child = child;
    child.on("error", (e) => {
      if (child.pid === undefined) this.finishEarly("failedToStart", e.message);
    });
    if (child.pid === undefined) return;
    const pid = child.pid;
    this.pid = pid;
    this.stopTracking = trackPeakRss(pid);
    onPid?.(pid, startTime);

    const fd3 = child.stdio[3] as Readable | null;
    fd3?.on("data", (chunk: Buffer) => {
      if (this.report.length < 4096) this.report += chunk.toString("latin1");
      this.commandPid ??= parseWrapperReport(this.report).pid;
    });
    fd3?.on("error", () => undefined);
    go.then(
      () => this.release(pid, fd3 as Writable | null, order),
      () => this.discard(),
    );

    for (const s of this.streams) {
      const readable = s.name === "stdout" ? child.stdout : child.stderr;
      s.readable = readable;
      readable?.on("data", (chunk: Buffer) => this.onChunk(s, chunk));
      readable?.on("error", () => undefined);
    }

    child.stdin?.on("error", () => undefined);
    if (this.cmd.stdin !== undefined) child.stdin?.end(Buffer.from(this.cmd.stdin, "base64"));
    else if (!this.cmd.stdinStream) child.stdin?.destroy(); // EOF for the command, without a shutdown() first

    child.on("exit", () => {
      // The wrapper has reported: whatever is left of a killed command's group goes now.
      if (this.endReason) killGroup(pid, "SIGKILL");
      const grace = setTimeout(() => {
        for (const s of this.streams) s.readable?.destroy();
        fd3?.destroy();
      }, STREAM_GRACE_MS);
      grace.unref();
      child.once("close", () => clearTimeout(grace));
    });
    child.on("close", (code, signal) => void this.finish(code, signal));
  }

  /** Tells the waiting wrapper to start the command. */
  private release(pid: number, fd3: Writable | null, order: string): void {
    if (this.finished) return;
    if (this.endReason) {
      killGroup(pid, "SIGKILL");
      return this.finishEarly(this.endReason, `${this.endReason === "cancelled" ? "cancelled" : "timed out"} before it started`);
    }
    this.released = true;
    this.startedAt = Date.now();
    this.startedMono = performance.now();
    fd3?.write(order);
    // Counts running time only: a VM paused by freezing its processes does not use up the timeout.
    if (this.cmd.timeoutMs !== undefined) this.timeoutTimer = new RunningTimeout(this.cmd.timeoutMs, () => this.terminate("timedOut"));
  }

  /** The command will never run (it could not be journalled): its wrapper goes, anything waiting is released, no result. */
  discard(): void {
    if (this.finished) return;
    this.finished = true;
    this.ended();
    this.markSpawned();
    this.stopTracking?.();
    if (this.pid !== undefined) killGroup(this.pid, "SIGKILL");
  }

  /** Out of flight: the agent's next wrapper may be spawned ahead again (wrapper-pool.ts). */
  private ended(): void {
    this.wrappers?.replenish();
    this.over();
  }

  /** CMD_CANCEL: SIGTERM to the command's process group, SIGKILL a second later. */
  cancel(): void {
    this.terminate("cancelled");
  }

  /** CMD_INPUT, in `seq` order (duplicates ignored, early ones held). Resolves when written. */
  async input(message: CmdInput): Promise<void> {
    // Input may arrive while the journal record is being made durable: it waits for the spawn (and its ack with it).
    await this.spawned;
    const stdin = this.child?.stdin;
    if (!this.cmd.stdinStream || !stdin || this.finished) return;
    if (message.seq < this.nextInputSeq) return;
    if (message.seq > this.nextInputSeq) {
      if (this.heldInputs.size < MAX_PENDING_INPUTS) this.heldInputs.set(message.seq, message);
      return;
    }
    let next: CmdInput | undefined = message;
    while (next) {
      this.nextInputSeq++;
      const data = Buffer.from(next.data, "base64");
      if (next.eof) {
        stdin.end(data);
        this.heldInputs.clear();
        return;
      }
      if (data.length && !stdin.write(data) && !stdin.destroyed) {
        await new Promise<void>((resolve) => {
          stdin.once("drain", resolve);
          stdin.once("close", resolve);
        });
      }
      next = this.heldInputs.get(this.nextInputSeq);
      this.heldInputs.delete(this.nextInputSeq);
    }
  }

  private terminate(reason: "timedOut" | "cancelled"): void {
    if (this.finished || this.endReason) return;
    this.endReason = reason;
    if (!this.released || this.pid === undefined) return; // the command has not started: release() finishes it early
    // The wrapper ignores SIGTERM (once it forked the command), so it survives to report.
    killGroup(this.pid, "SIGTERM");
    this.killTimer = setTimeout(() => this.kill(), KILL_GRACE_MS);
  }

  /** SIGKILL the command itself (the wrapper then reports and exits, and its exit kills the rest of the group). */
  private kill(): void {
    if (this.finished || this.pid === undefined) return;
    if (this.commandPid === undefined) return killGroup(this.pid, "SIGKILL");
    try {
      process.kill(this.commandPid, "SIGKILL");
    } catch {
      killGroup(this.pid, "SIGKILL");
    }
  }

  private onChunk(s: StreamState, chunk: Buffer): void {
    s.tail.push(chunk);
    if (!this.cmd.stream) return;
    s.pending.push(chunk);
    s.pendingBytes += chunk.length;
    if (s.pendingBytes >= COALESCE_BYTES) this.flush(s);
    else if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flushAll(), COALESCE_MS);
  }

  private flushAll(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const s of this.streams) this.flush(s);
  }

  private flush(s: StreamState): void {
    if (s.pendingBytes === 0) return;
    const data = s.pending.length === 1 ? (s.pending[0] as Buffer) : Buffer.concat(s.pending);
    s.pending = [];
    s.pendingBytes = 0;
    for (let at = 0; at < data.length; at += MAX_CHUNK_BYTES) {
      const piece = data.subarray(at, at + MAX_CHUNK_BYTES);
      const message: CmdOutput = {
        type: "CMD_OUTPUT",
        cmdId: this.cmd.cmdId,
        agentId: this.agentId,
        stream: s.name,
        seq: this.seq++,
        offset: s.offset,
        data: piece.toString("base64"),
      };
      s.offset += piece.length;
      this.io.output.send(message, piece.length);
    }
    this.applyBackpressure();
  }

  private applyBackpressure(): void {
    const output = this.io.output;
    if (this.paused || (output.unconfirmedBytes <= UNCONFIRMED_HIGH_BYTES && !this.io.congested())) return;
    this.paused = true;
    for (const s of this.streams) s.readable?.pause();
    void (async () => {
      while (output.unconfirmedBytes > UNCONFIRMED_HIGH_BYTES / 2 || this.io.congested()) {
        if (this.io.congested()) await this.io.drained();
        else await output.whenBelow(UNCONFIRMED_HIGH_BYTES / 2);
      }
      this.paused = false;
      for (const s of this.streams) s.readable?.resume();
    })();
  }

  private async finish(code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.timeoutTimer?.clear();
    clearTimeout(this.killTimer);
    this.flushAll();
    const peakRssBytes = this.stopTracking?.() ?? 0;
    const report = parseWrapperReport(this.report);
    if (report.fail === "cwd" && !this.endReason) {
      await this.io.output.whenBelow(0);
      return this.settle(failedResult(this.agentId, this.cmd.cmdId, "failedToStart", `cwd ${this.cmd.cwd ?? ""}: could not be entered`, this.startedAt));
    }
    const outcome =
      report.status !== undefined ? decodeShellStatus(report.status) : { exitCode: code, signal: signal ?? null };
    const finishedAt = Date.now();
    const resources =
      this.released && report.cpuUserMs !== undefined && report.cpuSystemMs !== undefined
        ? { cpuUserMs: report.cpuUserMs, cpuSystemMs: report.cpuSystemMs, peakRssBytes, wallMs: Math.round(performance.now() - this.startedMono) }
        : null;
    // The result must not overtake output the broker has not confirmed (it may still be re-sent).
    await this.io.output.whenBelow(0);
    this.settle({
      type: "CMD_RESULT",
      cmdId: this.cmd.cmdId,
      agentId: this.agentId,
      status: this.endReason ?? "exited",
      exitCode: outcome.exitCode,
      signal: outcome.signal,
      stdout: (this.streams[0] as StreamState).tail.result(),
      stderr: (this.streams[1] as StreamState).tail.result(),
      startedAt: this.startedAt,
      finishedAt,
      resources,
      replayed: false,
    });
  }

  private finishEarly(status: CmdStatus, error: string): void {
    if (this.finished) return;
    this.finished = true;
    this.timeoutTimer?.clear();
    this.stopTracking?.();
    this.settle(failedResult(this.agentId, this.cmd.cmdId, status, error, this.startedAt));
  }
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // already gone
  }
}

/** A CMD_RESULT for a command that never ran (or whose run is unknown). */
export function failedResult(agentId: string, cmdId: string, status: CmdStatus, error: string, startedAt: number | null = null): CmdResult {
  const empty = { data: "", totalBytes: 0, truncated: false };
  return {
    type: "CMD_RESULT",
    cmdId,
    agentId,
    status,
    exitCode: null,
    signal: null,
    error: error.slice(0, 4096),
    stdout: empty,
    stderr: empty,
    startedAt,
    finishedAt: Date.now(),
    resources: null,
    replayed: false,
  };
}

/** Why the command cannot start (bad cwd, no such program), or undefined. */
function preflight(cmd: CmdRun, path: string | undefined): string | undefined {
  // A process cannot be given a NUL byte (the system's strings end there).
  const words = [...cmd.argv, ...Object.keys(cmd.env), ...Object.values(cmd.env), cmd.cwd ?? ""];
  if (words.some((w) => w.includes("\0"))) return "argv, env and cwd cannot contain a NUL byte";
  const cwd = cmd.cwd ?? process.cwd();
  try {
    if (!statSync(cwd).isDirectory()) return `cwd ${cwd} is not a directory`;
  } catch (e) {
    return `cwd ${cwd}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
  if (cmd.shell) return undefined;
  const file = cmd.argv[0] ?? "";
  const candidates = file.includes("/") ? [resolve(cwd, file)] : (path ?? "/usr/local/bin:/usr/bin:/bin").split(":").filter(Boolean).map((d) => join(d, file));
  for (const candidate of candidates) {
    try {
      // stat first: a miss then costs no exception (most PATH entries miss).
      if (!statSync(candidate, { throwIfNoEntry: false })?.isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return undefined;
    } catch {
      // not executable, or an unreadable PATH entry: try the next
    }
  }
  return file.includes("/") ? `${file}: not an executable file` : `${file}: command not found in PATH`;
}
