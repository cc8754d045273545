/**
 * The cmd-id journal that makes commands run exactly once.
 *
 * One append-only file of JSON lines in the agent's state dir:
 * - `accepted` (durable before the command starts and before the CMD_RUN is acknowledged to the
 *   broker): the command will run;
 * - `result`: how it ended, with the full CMD_RESULT. Written at once and durable with the next
 *   sync, within a second; the result is published without waiting for it. A crash before it lands leaves the command `accepted`
 *   without a result, so it is closed as `lost` on restart (never run again); the controller
 *   keeps the first result it got for a command id, so the real one still counts;
 * - `delivered` (never waited for): the broker confirmed the result; losing it only means a re-send.
 *
 * Durability is group-committed (see group-commit.ts): records are written at once and one
 * fdatasync covers every record appended meanwhile, on the thread pool, never blocking the event
 * loop. Only `accepted` asks for a sync of its own; `started`, `result` and `delivered` ride on
 * the next one (or a lazy one within a second), so a command's next neighbour does not queue
 * behind their disk flushes.
 *
 * A command found `accepted` without a result when the journal is opened was running when the
 * agent died: it is closed as `lost`. Entries are kept until their command has expired (plus a
 * margin for clock skew) and at least `retainMs` after they finished; the file is rewritten
 * without the others when it grows past `compactBytes`.
 *
 * Only verified commands are journalled: a forged message cannot reserve a cmd-id.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { CmdResult } from "@vmc/protocol/bus";
import { GroupCommitFile } from "./group-commit";

export interface JournalEntry {
  cmdId: string;
  replyTo: string;
  expiresAt: number;
  acceptedAt: number;
  result?: CmdResult;
  delivered: boolean;
  /** Pid (= process group) of the command and its start time in /proc ticks, to kill an orphan after a crash. */
  pid?: number;
  pidStart?: string;
}

type Record_ =
  | { k: "accepted"; cmdId: string; replyTo: string; expiresAt: number; at: number }
  | { k: "result"; cmdId: string; result: CmdResult; at: number }
  | { k: "delivered"; cmdId: string }
  | { k: "started"; cmdId: string; pid: number; pidStart?: string };

export interface JournalOptions {
  /** Keep finished entries at least this long (default 10 minutes). */
  retainMs?: number;
  /** Extra time kept past `expiresAt`, for clock skew (default 5 minutes). */
  skewMs?: number;
  /** Rewrite the file when it grows past this (default 32 MiB). */
  compactBytes?: number;
}

export class CmdJournal {
  private readonly entries = new Map<string, JournalEntry>();
  private readonly path: string;
  private file: GroupCommitFile;
  private size = 0;
  private readonly retainMs: number;
  private readonly skewMs: number;
  private readonly compactBytes: number;
  /** Commands that were running when the previous agent process died (closed as `lost` on open). */
  readonly lostOnOpen: JournalEntry[] = [];

  constructor(stateDir: string, options: JournalOptions = {}) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.path = join(stateDir, "cmd-journal.jsonl");
    this.retainMs = options.retainMs ?? 10 * 60_000;
    this.skewMs = options.skewMs ?? 5 * 60_000;
    this.compactBytes = options.compactBytes ?? 32 * 1024 * 1024;
    // Compacted on open; an empty or missing journal (a new agent, a fresh clone) has nothing to
    // compact, and its rewrite's fsync was the largest step of a template clone's agent start.
    if (this.load() > 0) this.rewrite();
    this.file = new GroupCommitFile(this.path);
  }

  get(cmdId: string): JournalEntry | undefined {
    return this.entries.get(cmdId);
  }

  /** Entries with a result the broker has not confirmed. */
  undelivered(): JournalEntry[] {
    return [...this.entries.values()].filter((e) => e.result && !e.delivered);
  }

  /**
   * Records that `cmdId` will run; durable when the promise resolves. The entry is known to
   * {@link get} at once, so a duplicate arriving meanwhile is not started twice. When the record
   * cannot be made durable the entry is forgotten and the promise rejects: do not run it.
   */
  async accept(cmdId: string, replyTo: string, expiresAt: number): Promise<JournalEntry> {
    const entry: JournalEntry = { cmdId, replyTo, expiresAt, acceptedAt: Date.now(), delivered: false };
    this.entries.set(cmdId, entry);
    try {
      await this.append({ k: "accepted", cmdId, replyTo, expiresAt, at: entry.acceptedAt });
    } catch (e) {
      if (this.entries.get(cmdId) === entry) this.entries.delete(cmdId);
      throw e;
    }
    return entry;
  }

  /** Records how `cmdId` ended (written now, durable within a second: nobody waits for it). */
  finish(cmdId: string, result: CmdResult): void {
    const entry = this.entries.get(cmdId);
    if (!entry) return;
    entry.result = result;
    this.append({ k: "result", cmdId, result, at: Date.now() }, true);
  }

  /** Records the command's process group (not waited for: only used to clean up after a crash). */
  started(cmdId: string, pid: number, pidStart: string | undefined): void {
    const entry = this.entries.get(cmdId);
    if (!entry) return;
    entry.pid = pid;
    entry.pidStart = pidStart;
    this.append(pidStart === undefined ? { k: "started", cmdId, pid } : { k: "started", cmdId, pid, pidStart }, true);
  }

  markDelivered(cmdId: string): void {
    const entry = this.entries.get(cmdId);
    if (!entry || entry.delivered) return;
    entry.delivered = true;
    this.append({ k: "delivered", cmdId }, true);
  }

  /** Makes everything written durable, then closes the file. */
  close(): Promise<void> {
    return this.file.close();
  }

  /** Writes the record now; resolves once it is durable (rejects when it cannot be). */
  private append(record: Record_): Promise<void>;
  /** Writes the record now, durable with the next sync (see group-commit.ts). */
  private append(record: Record_, lazily: true): void;
  private append(record: Record_, lazily = false): Promise<void> | void {
    const line = `${JSON.stringify(record)}\n`;
    this.size += Buffer.byteLength(line);
    const durable = lazily ? this.file.appendLazily(line) : this.file.append(line);
    if (this.size > this.compactBytes) {
      // Compacting rewrites from memory, so everything appended is in the new file; the old file's
      // pending syncs still complete (or fail) on their own descriptor before it is closed.
      const old = this.file;
      this.rewrite();
      this.file = new GroupCommitFile(this.path);
      void old.close();
    }
    return durable;
  }

  /** Reads the journal into `entries`; returns its size in bytes. */
  private load(): number {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw e;
    }
    for (const line of text.split("\n")) {
      if (!line) continue;
      let record: Record_;
      try {
        record = JSON.parse(line) as Record_;
      } catch {
        continue; // a torn last line after a crash
      }
      if (record.k === "accepted") {
        this.entries.set(record.cmdId, { cmdId: record.cmdId, replyTo: record.replyTo, expiresAt: record.expiresAt, acceptedAt: record.at, delivered: false });
      } else if (record.k === "result") {
        const entry = this.entries.get(record.cmdId);
        if (entry) entry.result = record.result;
      } else if (record.k === "started") {
        const entry = this.entries.get(record.cmdId);
        if (entry) {
          entry.pid = record.pid;
          entry.pidStart = record.pidStart;
        }
      } else if (record.k === "delivered") {
        const entry = this.entries.get(record.cmdId);
        if (entry) entry.delivered = true;
      }
    }
    for (const entry of this.entries.values()) if (!entry.result) this.lostOnOpen.push(entry);
    return text.length;
  }

  /** Writes the live entries to a new file and renames it over the old one. */
  private rewrite(): void {
    const now = Date.now();
    const lines: string[] = [];
    for (const [cmdId, e] of this.entries) {
      const keepUntil = Math.max(e.expiresAt + this.skewMs, e.acceptedAt + this.retainMs);
      if (e.result && keepUntil < now) {
        this.entries.delete(cmdId);
        continue;
      }
      lines.push(JSON.stringify({ k: "accepted", cmdId, replyTo: e.replyTo, expiresAt: e.expiresAt, at: e.acceptedAt }));
      if (e.result) lines.push(JSON.stringify({ k: "result", cmdId, result: e.result, at: e.result.finishedAt }));
      if (e.delivered) lines.push(JSON.stringify({ k: "delivered", cmdId }));
    }
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, "w", 0o600);
    const text = lines.length ? `${lines.join("\n")}\n` : "";
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.path);
    this.size = Buffer.byteLength(text);
  }
}
