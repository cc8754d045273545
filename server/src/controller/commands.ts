/**
 * The controller's command history: runs commands through the {@link Fleet}, keeps every one in
 * `$VMC_HOME/commands/` (see store/commands.ts and docs/COMMANDS.md), and reports them to the
 * endpoint as events.
 *
 * - A record is written before its CMD_RUNs are sent, throttled while output arrives, and
 *   written finished before `finished` fires. Results are read as often as wanted.
 * - Restart: a controller that takes over a dead one's identity (store/controller-lease.ts)
 *   adopts that controller's running records; their results, still queued on the shared reply
 *   destination, finish them (fleet `orphanReplies`).
 * - Pause: while a target's VM is paused or saved, the controller's deadlines for it stand still.
 * - Snapshot epochs: a restore ends every unfinished target sent at or after the snapshot was
 *   taken with `rolledBack`.
 * @packageDocumentation
 */
import { randomBytes } from "node:crypto";
import type { z } from "zod";
import { RpcErrorCodes, VmcError, VmcErrorCodes } from "@vmc/protocol/errors";
import type { CmdResult, CmdOutput } from "@vmc/protocol/bus";
import type {
  CmdInputRequest,
  CmdListRequest,
  CmdRunRequest,
  CommandOutputEvent,
  CommandRecord,
  CommandSummary,
  CommandTarget,
  CommandTargetStatus,
  OutputTailInfo,
  VmStateChange,
} from "@vmc/protocol/rpc";
import type { CommandRun, RunRequest } from "../fleet/command";
import type { Fleet } from "../fleet/fleet";
import { classifyResult, type StreamTail, type TargetOutcome } from "../fleet/outcome";
import { ByteTail } from "../fleet/tail";
import { TargetSyntaxError } from "../fleet/target";
import { CommandStore, defaultExpiryPolicy, type ExpiryPolicy, type StoredCommand } from "../store/commands";
import { listSlots } from "../store/controller-lease";

export type CmdRunParams = z.infer<typeof CmdRunRequest.params>;
export type CmdInputParams = z.infer<typeof CmdInputRequest.params>;
export type CmdListParams = NonNullable<z.infer<typeof CmdListRequest.params>>;

/** What the service reports; the endpoint forwards them as notifications. */
export interface CommandEvents {
  started(record: CommandRecord): void;
  output(event: CommandOutputEvent): void;
  /** Called after the finished record is in the store. */
  finished(record: CommandRecord): void;
}

/** Which VM an agent lives in (the endpoint implements it from the VM registry). */
export interface VmDirectory {
  vmOfAgent(agentId: string): string | undefined;
}

export interface CommandServiceOptions {
  home: string;
  fleet: Fleet;
  events: CommandEvents;
  vms: VmDirectory;
  log?: (message: string) => void;
  /** Default: {@link defaultExpiryPolicy} (environment overrides). */
  expiry?: Partial<ExpiryPolicy>;
  /** Least time between two writes of a running command's record (default 1000 ms). */
  writeIntervalMs?: number;
  /** Bytes of each stream kept per target in the store (default 256 KiB, less for many targets). */
  tailBytes?: number;
}

const MIB = 1024 * 1024;
const STORE_TAIL_BUDGET = 8 * MIB;
/** cmd.list default when no limit is given. */
const LIST_DEFAULT_LIMIT = 1000;
/** A cancel of a command this process cannot finish itself waits this long for its owner. */
const FOREIGN_CANCEL_WAIT_MS = 10_000;

type Stream = "stdout" | "stderr";

/** A command this process writes: sent by it (`run`) or adopted from a dead predecessor. */
interface Owned {
  stored: StoredCommand;
  /** Sent by this process (its CommandRun decides when it ends); false when adopted. */
  live: boolean;
  run?: CommandRun;
  tails: Map<string, Record<Stream, ByteTail>>;
  /** Next byte offset per target and stream (what has been seen). */
  offsets: Map<string, Record<Stream, number>>;
  flushTimer?: NodeJS.Timeout;
  lastWrite: number;
  done: Promise<CommandRecord>;
  resolve(record: CommandRecord): void;
  /** Send `cmd.output` notifications. */
  stream: boolean;
}

/** Statuses a target ends with. */
const FINAL: ReadonlySet<CommandTargetStatus> = new Set(["succeeded", "failed", "timedOut", "cancelled", "unreachable", "rolledBack"]);

export function newCommandId(): string {
  return `k-${Date.now().toString(36)}-${randomBytes(6).toString("base64url")}`;
}

/**
 * Lease slots to try first: those whose instance id owns running commands in the store, so a
 * restarted controller takes over the identity whose reply subscription holds their results.
 * Pass it as `acquireControllerLease(home, { prefer: preferredSlots(home) })`.
 */
export function preferredSlots(home: string): () => number[] {
  return () => {
    const running = new Set(new CommandStore(home).list().flatMap((c) => (c.record.state === "running" ? [c.owner] : [])));
    return listSlots(home)
      .filter((s) => !s.held && running.has(s.instanceId))
      .map((s) => s.slot);
  };
}

export class CommandService {
  private readonly store: CommandStore;
  private readonly owned = new Map<string, Owned>();
  /** Bus cmdId → [record id, agent id], for every target of every owned command. */
  private readonly byCmdId = new Map<string, { id: string; agentId: string }>();
  private readonly pausedVms = new Set<string>();
  private readonly log: (message: string) => void;
  private readonly writeIntervalMs: number;
  private lastPrune = 0;
  private closed = false;

  private constructor(private readonly options: CommandServiceOptions) {
    this.store = new CommandStore(options.home, { ...defaultExpiryPolicy(), ...options.expiry });
    this.log = options.log ?? ((m) => process.stderr.write(`commands: ${m}\n`));
    this.writeIntervalMs = options.writeIntervalMs ?? 1000;
  }

  /** Opens the history, prunes expired records, and adopts running ones owned by this fleet's identity. */
  static async open(options: CommandServiceOptions): Promise<CommandService> {
    const service = new CommandService(options);
    service.prune(true);
    service.adopt();
    options.fleet.orphanReplies = (message) => service.onOrphanReply(message);
    return service;
  }

  /** Sends a command; answers at once (state `running`) or, with `wait`, once it finished. Abort cancels it. */
  async run(params: CmdRunParams, signal?: AbortSignal): Promise<CommandRecord> {
    if (this.closed) throw new VmcError(VmcErrorCodes.ShuttingDown, "the controller is shutting down");
    const id = newCommandId();
    const request: RunRequest = {
      target: params.target,
      argv: params.argv,
      shell: params.shell ?? false,
      ...(params.env ? { env: params.env } : {}),
      ...(params.cwd !== undefined ? { cwd: params.cwd } : {}),
      ...(params.stdin !== undefined ? { stdin: Buffer.from(params.stdin, "base64") } : {}),
      stdinStream: params.interactive ?? false,
      ...(params.timeoutMs !== undefined ? { timeoutMs: params.timeoutMs } : {}),
      ...(params.expiresInMs !== undefined ? { expiresInMs: params.expiresInMs } : {}),
      stream: true,
    };
    let owned: Owned | undefined;
    let run: CommandRun;
    try {
      run = await this.options.fleet.run(request, {
        onExpanded: (agentIds, r) => {
          owned = this.begin(id, params, agentIds, r);
        },
        onOutput: (agentId, stream, data) => {
          if (owned) this.output(owned, agentId, stream, data, undefined);
        },
        onTargetDone: (outcome) => {
          if (owned) this.targetDone(owned, outcome);
        },
      });
    } catch (e) {
      if (e instanceof TargetSyntaxError) throw new VmcError(RpcErrorCodes.InvalidParams, `target: ${e.message}`, { field: "target" });
      throw e;
    }
    const o = owned!;
    o.run = run;
    void run.done.then(() => this.finish(o));
    if (!params.wait) return this.current(o);
    const onAbort = () => run.cancel();
    if (signal?.aborted) onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await o.done;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** More stdin for an `interactive` command (every target, or one). */
  async input(params: CmdInputParams): Promise<void> {
    const o = this.owned.get(params.id);
    if (!o?.run) {
      const stored = this.store.read(params.id);
      if (!stored) throw unknownCommand(params.id);
      if (stored.record.state === "finished") throw new VmcError(VmcErrorCodes.InvalidState, `command ${params.id} has finished`, { state: "finished" });
      throw new VmcError(VmcErrorCodes.InvalidState, `command ${params.id} was started by another controller process (pid ${stored.ownerPid}): only it can feed its stdin`, { state: "running" });
    }
    if (params.agentId !== undefined && !o.stored.wire.some((w) => w.agentId === params.agentId)) {
      throw new VmcError(RpcErrorCodes.InvalidParams, `agentId: command ${params.id} has no target ${params.agentId}`, { field: "agentId" });
    }
    await o.run.input(params.data ? Buffer.from(params.data, "base64") : Buffer.alloc(0), params.eof ?? false, params.agentId);
  }

  /** Cancels a command and answers once every target has ended (or, for another process's command, once it finished or a bound passed). */
  async cancel(id: string): Promise<CommandRecord> {
    const o = this.owned.get(id);
    if (o?.run) {
      o.run.cancel();
      return o.done;
    }
    const stored = o?.stored ?? this.store.read(id);
    if (!stored) throw unknownCommand(id);
    if (stored.record.state === "finished") return stored.record;
    const open = stored.wire.filter((w) => !FINAL.has(stored.record.targets.find((t) => t.agentId === w.agentId)?.status ?? "pending"));
    await Promise.all(open.map((w) => this.options.fleet.sendCancel(w.agentId, w.cmdId).catch(() => undefined)));
    if (o) {
      // Adopted: its results come to us; bound the wait like a live run's cancel grace.
      const timer = setTimeout(() => {
        for (const w of open) this.endTarget(o, w.agentId, { status: "unreachable", reason: "cancel sent after a controller restart; the agent did not confirm" });
      }, FOREIGN_CANCEL_WAIT_MS);
      const record = await o.done;
      clearTimeout(timer);
      return record;
    }
    const deadline = Date.now() + FOREIGN_CANCEL_WAIT_MS;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const now = this.store.read(id);
      if (now?.record.state === "finished") return now.record;
    }
    return this.store.read(id)?.record ?? stored.record;
  }

  /** Newest first, without output tails. */
  async list(params: CmdListParams = {}): Promise<CommandSummary[]> {
    const out: CommandSummary[] = [];
    const limit = params.limit ?? LIST_DEFAULT_LIMIT;
    for (const c of this.store.list()) {
      const record = this.owned.get(c.record.id) ? this.current(this.owned.get(c.record.id)!) : c.record;
      if (params.state && record.state !== params.state) continue;
      out.push(summarize(record));
      if (out.length >= limit) break;
    }
    return out;
  }

  /** The record with its output tails; VmcError UnknownCommand when there is none (never was, or expired). */
  async get(id: string): Promise<CommandRecord> {
    const o = this.owned.get(id);
    if (o) return this.current(o);
    const stored = this.store.read(id);
    if (!stored) throw unknownCommand(id);
    return stored.record;
  }

  /** A VM paused (or saved) stops the controller's deadlines for its agents' targets; running again restarts them. */
  vmStateChanged(change: VmStateChange): void {
    const paused = change.state === "paused" || change.state === "saved";
    if (paused) this.pausedVms.add(change.name);
    else this.pausedVms.delete(change.name);
    for (const o of this.owned.values()) {
      if (!o.run) continue;
      for (const w of o.stored.wire) if (this.options.vms.vmOfAgent(w.agentId) === change.name) o.run.setPaused(w.agentId, paused);
    }
  }

  /**
   * The VM `vm` (agent `agentId`) was restored to a snapshot taken at `snapshotTakenAt`: every
   * unfinished target on that agent whose CMD_RUN was sent at or after that instant ends `rolledBack`.
   */
  snapshotRestored(vm: string, agentId: string, snapshotTakenAt: number, _restoredAt: number, snapshot?: string): void {
    const reason = `rolled back by restore of snapshot ${snapshot ?? "(unnamed)"} of VM ${vm}`;
    for (const o of [...this.owned.values()]) {
      for (const w of o.stored.wire) {
        if (w.agentId !== agentId && this.options.vms.vmOfAgent(w.agentId) !== vm) continue;
        if (o.run) o.run.rollBack(w.agentId, snapshotTakenAt, reason);
        else if (w.issuedAt >= snapshotTakenAt) this.endTarget(o, w.agentId, { status: "rolledBack", reason });
      }
    }
  }

  /** Writes what is pending; running commands stay in the store for the next controller with this identity. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.options.fleet.orphanReplies) this.options.fleet.orphanReplies = undefined;
    for (const o of this.owned.values()) {
      clearTimeout(o.flushTimer);
      if (o.stored.record.state === "running") this.write(o);
    }
  }

  // ───────────── live runs ─────────────

  private begin(id: string, params: CmdRunParams, agentIds: readonly string[], run: CommandRun): Owned {
    const now = Date.now();
    const tailBytes = this.options.tailBytes ?? Math.max(4096, Math.min(256 * 1024, Math.floor(STORE_TAIL_BUDGET / Math.max(1, agentIds.length) / 2)));
    const sorted = [...agentIds].sort();
    const record: CommandRecord = {
      id,
      target: params.target,
      argv: params.argv,
      shell: params.shell ?? false,
      ...(params.cwd !== undefined ? { cwd: params.cwd } : {}),
      state: "running",
      submittedAt: now,
      finishedAt: null,
      targets: sorted.map((agentId) => emptyTarget(agentId, this.options.fleet.registry.get(agentId)?.state === "online" ? "running" : "pending")),
      ok: false,
    };
    const stored: StoredCommand = {
      version: 1,
      owner: this.options.fleet.instanceId,
      ownerPid: process.pid,
      ...(params.timeoutMs !== undefined ? { timeoutMs: params.timeoutMs } : {}),
      tailBytes,
      // The CMD_RUNs are issued right after this; a later send time only moves issuedAt forward.
      wire: sorted.map((agentId) => ({ agentId, cmdId: run.targetOf(agentId)!.cmdId, issuedAt: now })),
      record,
      updatedAt: now,
    };
    const o = this.own(stored, params.stream ?? true);
    o.live = true;
    this.write(o);
    for (const agentId of sorted) {
      const vm = this.options.vms.vmOfAgent(agentId);
      if (vm && this.pausedVms.has(vm)) run.setPaused(agentId, true);
    }
    this.emit(() => this.options.events.started(this.current(o)));
    return o;
  }

  private own(stored: StoredCommand, stream: boolean): Owned {
    let resolve!: (r: CommandRecord) => void;
    const done = new Promise<CommandRecord>((r) => (resolve = r));
    const o: Owned = { stored, live: false, tails: new Map(), offsets: new Map(), lastWrite: 0, done, resolve, stream };
    for (const t of stored.record.targets) {
      const stdout = new ByteTail(stored.tailBytes);
      const stderr = new ByteTail(stored.tailBytes);
      seedTail(stdout, t.stdout);
      seedTail(stderr, t.stderr);
      o.tails.set(t.agentId, { stdout, stderr });
      o.offsets.set(t.agentId, { stdout: t.stdout.totalBytes, stderr: t.stderr.totalBytes });
    }
    this.owned.set(stored.record.id, o);
    for (const w of stored.wire) this.byCmdId.set(w.cmdId, { id: stored.record.id, agentId: w.agentId });
    return o;
  }

  /** Fresh output of a target: `offset` given for replies that may repeat (adopted commands). */
  private output(o: Owned, agentId: string, stream: Stream, data: Buffer, offset: number | undefined): void {
    const offsets = o.offsets.get(agentId);
    const tails = o.tails.get(agentId);
    const target = o.stored.record.targets.find((t) => t.agentId === agentId);
    if (!offsets || !tails || !target || FINAL.has(target.status)) return;
    let fresh = data;
    if (offset !== undefined) {
      const end = offset + data.length;
      if (end <= offsets[stream]) return;
      fresh = offset < offsets[stream] ? data.subarray(offsets[stream] - offset) : data;
      if (offset > offsets[stream]) offsets[stream] = offset; // a gap: bytes lost before the takeover
    }
    const at = offsets[stream];
    offsets[stream] += fresh.length;
    tails[stream].push(fresh);
    target.status = "running";
    if (o.stream) this.emit(() => this.options.events.output({ id: o.stored.record.id, agentId, stream, offset: at, data: fresh.toString("base64") }));
    this.scheduleWrite(o);
  }

  private targetDone(o: Owned, outcome: TargetOutcome): void {
    this.endTarget(o, outcome.agentId, {
      status: outcome.status,
      ...(outcome.reason !== undefined ? { reason: outcome.reason } : {}),
      exitCode: outcome.exitCode,
      signal: outcome.signal,
      stdout: outcome.stdout,
      stderr: outcome.stderr,
      resources: outcome.resources,
      startedAt: outcome.startedAt,
    });
  }

  /** Ends one target (once). For adopted commands, the command finishes with its last target. */
  private endTarget(
    o: Owned,
    agentId: string,
    end: Partial<Omit<CommandTarget, "stdout" | "stderr">> & { status: CommandTargetStatus; stdout?: StreamTail; stderr?: StreamTail },
  ): void {
    const target = o.stored.record.targets.find((t) => t.agentId === agentId);
    if (!target || FINAL.has(target.status)) return;
    const tails = o.tails.get(agentId)!;
    const offsets = o.offsets.get(agentId)!;
    for (const s of ["stdout", "stderr"] as const) {
      const given = end[s];
      // The agent's (or the run's) tail is authoritative when it covers at least what we saw.
      if (given && given.totalBytes >= tails[s].total) {
        const t = new ByteTail(o.stored.tailBytes);
        t.push(given.data);
        t.total = given.totalBytes;
        tails[s] = t;
        offsets[s] = Math.max(offsets[s], given.totalBytes);
      }
    }
    target.status = end.status;
    target.exitCode = end.exitCode ?? null;
    target.signal = end.signal ?? null;
    if (end.reason !== undefined) target.reason = end.reason;
    target.resources = end.resources ?? null;
    target.startedAt = end.startedAt ?? target.startedAt;
    target.finishedAt = Date.now();
    if (!o.live && o.stored.record.targets.every((t) => FINAL.has(t.status))) this.finish(o);
    else this.scheduleWrite(o);
  }

  private finish(o: Owned): void {
    const record = o.stored.record;
    if (record.state === "finished") return;
    clearTimeout(o.flushTimer);
    for (const t of record.targets) {
      if (!FINAL.has(t.status)) Object.assign(t, { status: "unreachable", reason: t.reason ?? "the command ended without a result for this target" });
    }
    record.state = "finished";
    record.finishedAt = Date.now();
    record.ok = record.targets.length > 0 && record.targets.every((t) => t.status === "succeeded");
    const finished = this.current(o);
    try {
      this.write(o);
    } catch (e) {
      this.log(`could not write the finished record ${record.id}: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.owned.delete(record.id);
    for (const w of o.stored.wire) this.byCmdId.delete(w.cmdId);
    this.emit(() => this.options.events.finished(finished));
    o.resolve(finished);
    this.prune(false);
  }

  // ───────────── adoption (controller restart) ─────────────

  private adopt(): void {
    const me = this.options.fleet.instanceId;
    let adopted = 0;
    for (const summary of this.store.list()) {
      if (summary.owner !== me || summary.record.state !== "running") continue;
      const stored = this.store.read(summary.record.id);
      if (!stored || stored.record.state !== "running") continue;
      this.own(stored, true);
      adopted++;
    }
    if (adopted) this.log(`adopted ${adopted} running command(s) of an earlier controller with identity ${me}`);
  }

  private onOrphanReply(message: CmdOutput | CmdResult): void {
    const where = this.byCmdId.get(message.cmdId);
    const o = where && this.owned.get(where.id);
    if (!where || !o || o.live) return;
    if (where.agentId !== message.agentId) return this.log(`dropped ${message.type} for ${message.cmdId}: it claims agent ${message.agentId}, the command went to ${where.agentId}`);
    if (message.type === "CMD_OUTPUT") return this.output(o, message.agentId, message.stream, Buffer.from(message.data, "base64"), message.offset);
    const { status, reason } = classifyResult(message);
    const tail = (s: Stream): StreamTail => {
      const t = message[s];
      return { data: Buffer.from(t.data, "base64"), totalBytes: t.totalBytes, truncated: t.truncated };
    };
    this.endTarget(o, message.agentId, {
      status,
      ...(reason !== undefined ? { reason } : {}),
      exitCode: message.exitCode,
      signal: message.signal,
      stdout: tail("stdout"),
      stderr: tail("stderr"),
      resources: message.resources,
      startedAt: message.startedAt,
    });
  }

  // ───────────── store ─────────────

  /** The record as it stands, tails included (a copy: callers may keep it). */
  private current(o: Owned): CommandRecord {
    const r = o.stored.record;
    return {
      ...r,
      argv: [...r.argv],
      targets: r.targets.map((t) => {
        const tails = o.tails.get(t.agentId);
        return { ...t, stdout: tails ? tailInfo(tails.stdout) : t.stdout, stderr: tails ? tailInfo(tails.stderr) : t.stderr, ...(t.resources ? { resources: { ...t.resources } } : {}) };
      }),
    };
  }

  private write(o: Owned): void {
    o.stored.record = this.current(o);
    o.stored.updatedAt = Date.now();
    o.stored.ownerPid = process.pid;
    this.store.write(o.stored);
    o.lastWrite = Date.now();
  }

  /** Running records are written at most every `writeIntervalMs`, not per output chunk. */
  private scheduleWrite(o: Owned): void {
    if (o.flushTimer || this.closed) return;
    const wait = Math.max(0, o.lastWrite + this.writeIntervalMs - Date.now());
    o.flushTimer = setTimeout(() => {
      o.flushTimer = undefined;
      if (o.stored.record.state !== "running") return;
      try {
        this.write(o);
      } catch (e) {
        this.log(`could not write ${o.stored.record.id}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }, wait);
  }

  private prune(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastPrune < 10_000) return;
    this.lastPrune = now;
    try {
      this.store.prune(now);
    } catch (e) {
      this.log(`pruning the history: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private emit(fire: () => void): void {
    try {
      fire();
    } catch (e) {
      this.log(`event handler failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

function unknownCommand(id: string): VmcError {
  return new VmcError(VmcErrorCodes.UnknownCommand, `no command ${id} (never run, or expired from the history)`, { id });
}

function emptyTarget(agentId: string, status: CommandTargetStatus): CommandTarget {
  const empty: OutputTailInfo = { data: "", totalBytes: 0, truncated: false };
  return { agentId, status, exitCode: null, signal: null, stdout: { ...empty }, stderr: { ...empty }, resources: null, startedAt: null, finishedAt: null };
}

function seedTail(tail: ByteTail, info: OutputTailInfo): void {
  const data = Buffer.from(info.data, "base64");
  tail.push(data);
  tail.total = Math.max(info.totalBytes, data.length);
}

function tailInfo(tail: ByteTail): OutputTailInfo {
  return { data: tail.bytes().toString("base64"), totalBytes: tail.total, truncated: tail.truncated };
}

function summarize(record: CommandRecord): CommandSummary {
  const { targets, ...rest } = record;
  return { ...rest, targets: targets.map((t) => ({ agentId: t.agentId, status: t.status, exitCode: t.exitCode, signal: t.signal })) };
}
