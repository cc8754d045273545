/**
 * The command history: `$VMC_HOME/commands/<id>.json`, one file per command (see docs/COMMANDS.md).
 *
 * Several controller processes share the directory without a lock: each file is written only by
 * its owner (the controller instance whose reply destination gets the command's results, named in
 * `owner`), always whole (temporary file + rename), so a reader sees the old or the new record,
 * never half of one. Finished records are never rewritten; any process may delete one that has
 * expired by the {@link ExpiryPolicy}, which is idempotent.
 * @packageDocumentation
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { Resources } from "@vmc/protocol/bus";
import type { CommandRecord } from "@vmc/protocol/rpc";

/** How long finished commands are kept. Running ones are never expired. */
export interface ExpiryPolicy {
  /** Finished records older than this (by `finishedAt`) are deleted (default 7 days; env `VMC_COMMANDS_MAX_AGE_MS`). */
  maxAgeMs: number;
  /** Beyond this many finished records the oldest are deleted (default 1000; env `VMC_COMMANDS_MAX_COUNT`). */
  maxCount: number;
}

export function defaultExpiryPolicy(env: NodeJS.ProcessEnv = process.env): ExpiryPolicy {
  const num = (v: string | undefined, fallback: number) => (v && Number.isFinite(Number(v)) && Number(v) > 0 ? Number(v) : fallback);
  return { maxAgeMs: num(env.VMC_COMMANDS_MAX_AGE_MS, 7 * 86_400_000), maxCount: num(env.VMC_COMMANDS_MAX_COUNT, 1000) };
}

/** What the store keeps beside the API's record: how to recognise the command's replies. */
export const StoredTarget = z.object({
  agentId: z.string(),
  /** The bus cmdId of this target's CMD_RUN. */
  cmdId: z.string(),
  issuedAt: z.number(),
});
export type StoredTarget = z.infer<typeof StoredTarget>;

const OutputTailSchema = z.object({ data: z.string(), totalBytes: z.number(), truncated: z.boolean() });
const RecordSchema = z.object({
  id: z.string(),
  target: z.string(),
  argv: z.array(z.string()),
  shell: z.boolean(),
  cwd: z.string().optional(),
  state: z.enum(["running", "finished"]),
  submittedAt: z.number(),
  finishedAt: z.number().nullable(),
  targets: z.array(
    z.object({
      agentId: z.string(),
      status: z.enum(["pending", "running", "succeeded", "failed", "timedOut", "cancelled", "unreachable", "rolledBack"]),
      exitCode: z.number().nullable(),
      signal: z.string().nullable(),
      reason: z.string().optional(),
      stdout: OutputTailSchema,
      stderr: OutputTailSchema,
      resources: Resources.nullable(),
      startedAt: z.number().nullable(),
      finishedAt: z.number().nullable(),
    }),
  ),
  ok: z.boolean(),
});

export const StoredCommand = z.object({
  version: z.literal(1),
  /** Instance id of the controller that writes this file (see controller-lease.ts). */
  owner: z.string(),
  /** The owner's pid when it last wrote (for diagnostics). */
  ownerPid: z.number(),
  timeoutMs: z.number().optional(),
  /** Bytes of each stream's tail kept per target. */
  tailBytes: z.number(),
  wire: z.array(StoredTarget),
  record: RecordSchema,
  updatedAt: z.number(),
});
export type StoredCommand = Omit<z.infer<typeof StoredCommand>, "record"> & { record: CommandRecord };

const ID = /^k-[A-Za-z0-9_-]{4,60}$/;

export class CommandStore {
  readonly dir: string;
  private readonly cache = new Map<string, { mtimeMs: number; size: number; command: StoredCommand }>();

  constructor(
    home: string,
    readonly policy: ExpiryPolicy = defaultExpiryPolicy(),
  ) {
    this.dir = join(home, "commands");
    mkdirSync(this.dir, { recursive: true });
  }

  static isId(id: string): boolean {
    return ID.test(id);
  }

  /** Replaces the command's file atomically (synchronous: callers write before they send or report). */
  write(command: StoredCommand): void {
    const file = this.file(command.record.id);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(command));
    renameSync(tmp, file);
  }

  /** The whole record, with its output tails. */
  read(id: string): StoredCommand | undefined {
    if (!CommandStore.isId(id)) return undefined;
    try {
      const parsed = StoredCommand.safeParse(JSON.parse(readFileSync(this.file(id), "utf8")));
      return parsed.success ? (parsed.data as StoredCommand) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Every readable record (corrupt or foreign files are skipped), newest first, WITHOUT output
   * tails (`data` is empty): a summary cache keyed by file mtime keeps listing cheap and small.
   */
  list(): StoredCommand[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: StoredCommand[] = [];
    const present = new Set<string>();
    for (const name of names) {
      if (!name.endsWith(".json") || !CommandStore.isId(name.slice(0, -5))) continue;
      present.add(name);
      const c = this.load(name);
      if (c) out.push(c);
    }
    for (const name of this.cache.keys()) if (!present.has(name)) this.cache.delete(name);
    return out.sort((a, b) => b.record.submittedAt - a.record.submittedAt || (a.record.id < b.record.id ? 1 : -1));
  }

  /** Deletes finished records expired by the policy, and temporary files left by crashed writers. Returns how many records went. */
  prune(now = Date.now()): number {
    const finished = this.list().filter((c) => c.record.state === "finished");
    let removed = 0;
    finished.forEach((c, index) => {
      const age = now - (c.record.finishedAt ?? c.record.submittedAt);
      if (age > this.policy.maxAgeMs || index >= this.policy.maxCount) {
        rmSync(this.file(c.record.id), { force: true });
        this.cache.delete(`${c.record.id}.json`);
        removed++;
      }
    });
    for (const name of safeReaddir(this.dir)) {
      if (!name.endsWith(".tmp")) continue;
      try {
        if (now - statSync(join(this.dir, name)).mtimeMs > 60_000) rmSync(join(this.dir, name), { force: true });
      } catch {
        // gone meanwhile
      }
    }
    return removed;
  }

  private file(id: string): string {
    if (!CommandStore.isId(id)) throw new Error(`not a command id: ${id}`);
    return join(this.dir, `${id}.json`);
  }

  private load(name: string): StoredCommand | undefined {
    const path = join(this.dir, name);
    try {
      const st = statSync(path);
      const hit = this.cache.get(name);
      if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.command;
      const parsed = StoredCommand.safeParse(JSON.parse(readFileSync(path, "utf8")));
      if (!parsed.success) return undefined;
      const command = parsed.data as StoredCommand;
      for (const t of command.record.targets) {
        t.stdout = { ...t.stdout, data: "" };
        t.stderr = { ...t.stderr, data: "" };
      }
      this.cache.set(name, { mtimeMs: st.mtimeMs, size: st.size, command });
      return command;
    } catch {
      return undefined;
    }
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
