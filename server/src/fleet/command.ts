/**
 * One command sent to its targets, and the bookkeeping that accounts for every one of them.
 *
 * Each target is in one of three phases: `away` (not online when the command was sent, or
 * went offline before it was picked up: the command waits in its durable inbox), `online`
 * (the agent is there: we wait for its result), `done`. Deadlines make sure every target ends:
 * - away: unreachable when the command's expiry has passed (plus a grace) with no answer;
 * - online with a timeout: unreachable when no result came `resultGraceMs` after the timeout;
 * - online, then offline (BYE or missed heartbeats): unreachable after `offlineGraceMs`;
 * - after a cancel: unreachable when the agent has not confirmed within `cancelGraceMs`.
 * While a target's VM is paused ({@link CommandRun.setPaused}) its deadline stands still: a
 * paused guest neither runs the command nor answers, and must not be declared unreachable.
 * @packageDocumentation
 */
import { randomBytes } from "node:crypto";
import type { CmdCancel, CmdInput, CmdOutput, CmdResult, CmdRunInput } from "@vmc/protocol/bus";
import { classifyResult, countStatuses, type RunReport, type StreamTail, type TargetOutcome, type TargetStatus } from "./outcome";
import { ByteTail } from "./tail";

export type OutputStream = "stdout" | "stderr";

/** What a caller asks to run. */
export interface RunRequest {
  /** Target expression (see target.ts). */
  target: string;
  argv: string[];
  /** Run argv[0] through `/bin/sh -c`. */
  shell?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  /** Whole stdin, given up front. */
  stdin?: Uint8Array;
  /** Keep stdin open for {@link CommandRun.input} (ignored when `stdin` is given). */
  stdinStream?: boolean;
  /** The agent kills the command after this long. */
  timeoutMs?: number;
  /** How long the command may wait in an offline agent's inbox (default 30 000 ms). */
  expiresInMs?: number;
  /** Bytes of each stream's tail kept per target (default: 1 MiB, less when there are many targets). */
  tailBytes?: number;
  /** Stream CMD_OUTPUT while running (default true). */
  stream?: boolean;
}

export interface RunEvents {
  /** The target was expanded: these agents get the command (called before anything is sent). */
  onExpanded?(agentIds: readonly string[], run: CommandRun): void;
  /**
   * A piece of a target's output, in order, each byte once. Return a promise to apply
   * backpressure: the message is acknowledged to the broker only when it settles, so a slow
   * consumer makes the broker hold the backlog instead of the controller's memory.
   */
  onOutput?(agentId: string, stream: OutputStream, data: Buffer): void | Promise<void>;
  /** A target has ended. */
  onTargetDone?(outcome: TargetOutcome): void;
  /** Streamed output skipped bytes `[from, to)` of a stream: they were lost in transit. */
  onOutputLost?(agentId: string, stream: OutputStream, from: number, to: number): void;
}

export interface RunTimings {
  /** After an away target's command expired (default 1000 ms). */
  awayGraceMs: number;
  /** After the command's timeout, for a result to arrive (default 10 000 ms). */
  resultGraceMs: number;
  /** After an online target goes offline, for a result already in flight (default 1500 ms). */
  offlineGraceMs: number;
  /** After CMD_CANCEL, for the agent's confirmation (default 15 000 ms: 5 s was too short for a TCG guest on a loaded host). */
  cancelGraceMs: number;
}

export const DEFAULT_TIMINGS: RunTimings = { awayGraceMs: 1000, resultGraceMs: 10_000, offlineGraceMs: 1500, cancelGraceMs: 15_000 };

/** What a run needs from the fleet around it. */
export interface RunContext {
  send(agentId: string, message: object, expiresInMs: number): Promise<void>;
  sign<T extends object>(message: T): T & { signature: string };
  isOnline(agentId: string): boolean;
  /** Why an agent is not online: never seen, or offline since when and why. */
  describeAway(agentId: string): string;
  replyTo: string;
  now(): number;
  timings: RunTimings;
  /** The run ended (all targets done). */
  finished(run: CommandRun): void;
}

type Phase = "away" | "online" | "done";

interface TargetState {
  agentId: string;
  cmdId: string;
  phase: Phase;
  issuedAt: number;
  nextOffset: Record<OutputStream, number>;
  seen: Record<OutputStream, ByteTail>;
  timer?: NodeJS.Timeout;
  cancelling: boolean;
  lostBytes: number;
  /** The agent went offline while this target was online; the timer is its grace. */
  wentOffline: boolean;
  /** Its VM is paused: the deadline below is kept, not running. */
  paused: boolean;
  /** The armed deadline: when it fires (while running) or how much is left (while paused). */
  deadline?: { at: number; left: number; fire: () => void };
  inputSeq: number;
  outcome?: TargetOutcome;
}

const MIB = 1024 * 1024;
/** Total bytes of tails a run keeps across all its targets, before the 4 KiB floor per target. */
const TAIL_BUDGET = 64 * MIB;

/** The tail size used for `targets` targets when the caller did not choose. */
export function defaultTailBytes(targets: number): number {
  return Math.max(4096, Math.min(MIB, Math.floor(TAIL_BUDGET / Math.max(1, targets) / 2)));
}

export function newCmdId(): string {
  return `c-${randomBytes(12).toString("base64url")}`;
}

export class CommandRun {
  readonly runId = `r-${randomBytes(9).toString("base64url")}`;
  readonly startedAt: number;
  readonly tailBytes: number;
  private readonly targets = new Map<string, TargetState>();
  private readonly byCmdId = new Map<string, TargetState>();
  private remaining: number;
  private resolveDone!: (report: RunReport) => void;
  /** Resolves when every target has ended. */
  readonly done: Promise<RunReport>;
  private cancelled = false;

  constructor(
    readonly request: RunRequest,
    agentIds: readonly string[],
    private readonly ctx: RunContext,
    private readonly events: RunEvents = {},
  ) {
    this.startedAt = ctx.now();
    this.tailBytes = request.tailBytes ?? defaultTailBytes(agentIds.length);
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    for (const agentId of agentIds) {
      const state: TargetState = {
        agentId,
        cmdId: newCmdId(),
        phase: "away",
        issuedAt: this.startedAt,
        nextOffset: { stdout: 0, stderr: 0 },
        seen: { stdout: new ByteTail(this.tailBytes), stderr: new ByteTail(this.tailBytes) },
        cancelling: false,
        wentOffline: false,
        paused: false,
        inputSeq: 0,
        lostBytes: 0,
      };
      this.targets.set(agentId, state);
      this.byCmdId.set(state.cmdId, state);
    }
    this.remaining = agentIds.length;
  }

  get agentIds(): string[] {
    return [...this.targets.keys()];
  }

  get cmdIds(): string[] {
    return [...this.byCmdId.keys()];
  }

  /** The cmdId and send time of a target's CMD_RUN. */
  targetOf(agentId: string): { cmdId: string; issuedAt: number; done: boolean } | undefined {
    const t = this.targets.get(agentId);
    return t && { cmdId: t.cmdId, issuedAt: t.issuedAt, done: t.phase === "done" };
  }

  /**
   * The target's VM was paused (true) or resumed (false): its deadline stops and later goes on
   * with the time it had left, at least `resultGraceMs`.
   */
  setPaused(agentId: string, paused: boolean): void {
    const t = this.targets.get(agentId);
    if (!t || t.phase === "done" || t.paused === paused) return;
    t.paused = paused;
    const d = t.deadline;
    if (!d) return;
    if (paused) {
      if (t.timer) clearTimeout(t.timer);
      t.timer = undefined;
      d.left = Math.max(0, d.at - this.ctx.now());
    } else {
      // After a long pause the agent's broker link is usually dead: give it a full grace to reconnect and answer.
      d.left = Math.max(d.left, this.ctx.timings.resultGraceMs);
      d.at = this.ctx.now() + d.left;
      t.timer = setTimeout(d.fire, d.left);
    }
  }

  /**
   * A snapshot restore rolled the target's guest back to `takenAt`: if its CMD_RUN was sent at or
   * after that instant and it has not ended, it ends `rolledBack` with `reason`. Returns whether it did.
   */
  rollBack(agentId: string, takenAt: number, reason: string): boolean {
    const t = this.targets.get(agentId);
    if (!t || t.phase === "done" || t.issuedAt < takenAt) return false;
    this.finalize(t, { status: "rolledBack", reason });
    return true;
  }

  /** Sends stdin to the targets still running (all, or one), in order; `eof` closes it. */
  async input(data: Uint8Array, eof: boolean, agentId?: string): Promise<void> {
    const targets = [...this.targets.values()].filter((t) => t.phase !== "done" && (agentId === undefined || t.agentId === agentId));
    const encoded = Buffer.from(data).toString("base64");
    await Promise.all(
      targets.map((t) => {
        const message: CmdInput = this.ctx.sign({ type: "CMD_INPUT" as const, cmdId: t.cmdId, agentId: t.agentId, seq: t.inputSeq++, data: encoded, eof, issuedAt: this.ctx.now() });
        return this.ctx.send(t.agentId, message, this.request.expiresInMs ?? 30_000);
      }),
    );
  }

  /** The agent a command id was sent to (replies must come from that agent). */
  agentFor(cmdId: string): string | undefined {
    return this.byCmdId.get(cmdId)?.agentId;
  }

  /** Outcomes so far (targets still running are absent). */
  outcomes(): TargetOutcome[] {
    return [...this.targets.values()].flatMap((t) => (t.outcome ? [t.outcome] : []));
  }

  /** Signs and sends each target its own CMD_RUN. */
  async start(): Promise<void> {
    this.events.onExpanded?.(this.agentIds, this);
    if (this.remaining === 0) return this.finish();
    const expiresInMs = this.request.expiresInMs ?? 30_000;
    const stdin = this.request.stdin ? Buffer.from(this.request.stdin).toString("base64") : undefined;
    await Promise.all(
      [...this.targets.values()].map(async (t) => {
        const issuedAt = this.ctx.now();
        t.issuedAt = issuedAt;
        const message: Omit<CmdRunInput, "signature"> = {
          type: "CMD_RUN",
          cmdId: t.cmdId,
          agentId: t.agentId,
          to: this.request.target,
          argv: this.request.argv,
          shell: this.request.shell ?? false,
          env: this.request.env ?? {},
          cwd: this.request.cwd,
          stdin,
          stdinStream: stdin === undefined && (this.request.stdinStream ?? false),
          timeoutMs: this.request.timeoutMs,
          stream: this.request.stream ?? true,
          tailBytes: this.tailBytes,
          issuedAt,
          expiresAt: issuedAt + expiresInMs,
          replyTo: this.ctx.replyTo,
        };
        if (this.ctx.isOnline(t.agentId)) this.goOnline(t);
        else this.arm(t, expiresInMs + this.ctx.timings.awayGraceMs, () => this.unreachable(t, `${this.ctx.describeAway(t.agentId)}; the command expired in its inbox after ${expiresInMs} ms with no answer`));
        try {
          await this.ctx.send(t.agentId, this.ctx.sign(message), expiresInMs);
        } catch (e) {
          this.unreachable(t, `could not send the command: ${e instanceof Error ? e.message : String(e)}`);
        }
      }),
    );
  }

  /** Sends a signed CMD_CANCEL to every target still running; see {@link RunTimings.cancelGraceMs}. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const t of this.targets.values()) {
      if (t.phase === "done") continue;
      t.cancelling = true;
      const message: CmdCancel = this.ctx.sign({ type: "CMD_CANCEL" as const, cmdId: t.cmdId, agentId: t.agentId, issuedAt: this.ctx.now() });
      this.ctx.send(t.agentId, message, this.request.expiresInMs ?? 30_000).catch(() => undefined);
      if (t.phase === "away") {
        this.finalize(t, { status: "cancelled", reason: `cancelled before the agent took the command (${this.ctx.describeAway(t.agentId)})` });
      } else {
        this.arm(t, this.ctx.timings.cancelGraceMs, () => this.unreachable(t, `cancel sent; the agent did not confirm within ${this.ctx.timings.cancelGraceMs} ms`));
      }
    }
  }

  /** Returns the consumer's backpressure promise, if any. */
  handleOutput(message: CmdOutput): void | Promise<void> {
    const t = this.byCmdId.get(message.cmdId);
    if (!t || t.phase === "done") return;
    if (t.phase === "away") this.goOnline(t);
    const data = Buffer.from(message.data, "base64");
    const expected = t.nextOffset[message.stream];
    const end = message.offset + data.length;
    if (end <= expected) return; // a duplicate (redelivery)
    // Overlap (a redelivery) is trimmed; a gap means a chunk was lost in transit: say so.
    if (message.offset > expected) {
      t.lostBytes += message.offset - expected;
      this.events.onOutputLost?.(t.agentId, message.stream, expected, message.offset);
    }
    const fresh = message.offset < expected ? data.subarray(expected - message.offset) : data;
    t.nextOffset[message.stream] = end;
    t.seen[message.stream].push(fresh);
    return this.events.onOutput?.(t.agentId, message.stream, fresh);
  }

  /** Returns the consumer's backpressure promise for output recovered from the tails, if any. */
  handleResult(result: CmdResult): Promise<void> | undefined {
    const t = this.byCmdId.get(result.cmdId);
    if (!t || t.phase === "done") return;
    const pending: Array<void | Promise<void>> = [];
    const stdout = this.resultTail(t, "stdout", result, pending);
    const stderr = this.resultTail(t, "stderr", result, pending);
    const { status, reason } = classifyResult(result);
    this.finalize(t, {
      status,
      reason,
      agentStatus: result.status,
      exitCode: result.exitCode,
      signal: result.signal,
      stdout,
      stderr,
      resources: result.resources,
      startedAt: result.startedAt,
    });
    const waits = pending.filter((p): p is Promise<void> => p instanceof Promise);
    return waits.length ? Promise.all(waits).then(() => undefined) : undefined;
  }

  /** Presence changed for an agent this run addresses. */
  agentChanged(agentId: string, kind: "online" | "offline", reason?: string): void {
    const t = this.targets.get(agentId);
    if (!t || t.phase === "done") return;
    if (kind === "online" && (t.phase === "away" || t.wentOffline)) this.goOnline(t);
    else if (kind === "offline" && t.phase === "online" && !t.cancelling) {
      const why = reason ? `: ${reason}` : "";
      t.wentOffline = true;
      this.arm(t, this.ctx.timings.offlineGraceMs, () => this.unreachable(t, `the agent went offline while the command was in flight${why}`));
    }
  }

  private goOnline(t: TargetState): void {
    t.phase = "online";
    t.wentOffline = false;
    if (t.cancelling) return;
    this.clear(t);
    const timeout = this.request.timeoutMs;
    if (timeout !== undefined) {
      const grace = this.ctx.timings.resultGraceMs;
      this.arm(t, timeout + grace, () => this.unreachable(t, `no result ${grace} ms after the command's ${timeout} ms timeout`));
    }
  }

  /** Streams output the live stream missed from the result's tail, and picks the tail to report. */
  private resultTail(t: TargetState, stream: OutputStream, result: CmdResult, pending: Array<void | Promise<void>>): StreamTail {
    const tail = result[stream];
    let data = Buffer.from(tail.data, "base64");
    if (data.length > this.tailBytes) data = data.subarray(data.length - this.tailBytes);
    const total = Math.max(tail.totalBytes, t.nextOffset[stream]);
    const tailStart = total - data.length;
    const missedFrom = t.nextOffset[stream];
    if (missedFrom < total && missedFrom >= tailStart) {
      const missed = data.subarray(missedFrom - tailStart);
      t.nextOffset[stream] = total;
      if (missed.length) pending.push(this.events.onOutput?.(t.agentId, stream, missed));
    } else if (missedFrom < tailStart && this.request.stream !== false) {
      t.lostBytes += tailStart - missedFrom;
      this.events.onOutputLost?.(t.agentId, stream, missedFrom, tailStart);
      const missed = data;
      t.nextOffset[stream] = total;
      if (missed.length) pending.push(this.events.onOutput?.(t.agentId, stream, missed));
    }
    return { data, totalBytes: total, truncated: tail.truncated || data.length < total };
  }

  private unreachable(t: TargetState, reason: string): void {
    this.finalize(t, { status: "unreachable", reason });
  }

  private finalize(t: TargetState, outcome: Partial<TargetOutcome> & { status: TargetStatus }): void {
    if (t.phase === "done") return;
    this.clear(t);
    t.phase = "done";
    const tailOf = (s: OutputStream): StreamTail => {
      const seen = t.seen[s];
      return { data: seen.bytes(), totalBytes: seen.total, truncated: seen.truncated };
    };
    t.outcome = {
      agentId: t.agentId,
      cmdId: t.cmdId,
      status: outcome.status,
      agentStatus: outcome.agentStatus ?? null,
      exitCode: outcome.exitCode ?? null,
      signal: outcome.signal ?? null,
      ...(outcome.reason !== undefined ? { reason: outcome.reason } : {}),
      stdout: outcome.stdout ?? tailOf("stdout"),
      stderr: outcome.stderr ?? tailOf("stderr"),
      resources: outcome.resources ?? null,
      startedAt: outcome.startedAt ?? null,
      finishedAt: this.ctx.now(),
      outputLostBytes: t.lostBytes,
    };
    t.seen = { stdout: new ByteTail(0), stderr: new ByteTail(0) };
    this.events.onTargetDone?.(t.outcome);
    if (--this.remaining === 0) this.finish();
  }

  private finish(): void {
    const targets = [...this.targets.values()]
      .map((t) => t.outcome!)
      .sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
    const counts = countStatuses(targets);
    this.ctx.finished(this);
    this.resolveDone({
      runId: this.runId,
      target: this.request.target,
      argv: this.request.argv,
      startedAt: this.startedAt,
      finishedAt: this.ctx.now(),
      targets,
      counts,
      ok: targets.length > 0 && counts.succeeded === targets.length,
    });
  }

  private arm(t: TargetState, ms: number, fire: () => void): void {
    this.clear(t);
    t.deadline = { at: this.ctx.now() + ms, left: ms, fire };
    if (!t.paused) t.timer = setTimeout(fire, ms);
  }

  private clear(t: TargetState): void {
    if (t.timer) clearTimeout(t.timer);
    t.timer = undefined;
    t.deadline = undefined;
  }
}
