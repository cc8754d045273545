/**
 * How each target of a command ended, from the controller's side. Every target a command was
 * sent to ends in exactly one of these; none is ever silently missing.
 * @packageDocumentation
 */
import type { CmdResult, CmdStatus, Resources } from "@vmc/protocol/bus";

/**
 * - `succeeded`: exited with code 0;
 * - `failed`: non-zero exit, killed by a signal, failed to start, rejected by the agent (bad
 *   signature, expired, replayed), or lost (the agent restarted while it ran); see `reason`;
 * - `timedOut`: the agent killed it at its timeout;
 * - `cancelled`: cancelled on request (confirmed by the agent, or before the agent took it);
 * - `unreachable`: no result: the agent was offline or unknown until the command expired, went
 *   offline while running, or did not answer by the deadline; `reason` says which;
 * - `rolledBack`: a snapshot restore rolled the guest back to before the command was sent (the
 *   controller was told of the restore, or the agent refused it as issued before its restore).
 */
export type TargetStatus = "succeeded" | "failed" | "timedOut" | "cancelled" | "unreachable" | "rolledBack";

export const TARGET_STATUSES: readonly TargetStatus[] = ["succeeded", "failed", "timedOut", "cancelled", "unreachable", "rolledBack"];

/** The prefix of an agent's refusal of a command issued before its VM's snapshot restore (agent/src/agent.ts). */
export const AGENT_ROLLED_BACK_PREFIX = "rolled back";

/** A bounded tail of one output stream. */
export interface StreamTail {
  data: Buffer;
  /** Bytes the stream produced in all (as far as the controller knows). */
  totalBytes: number;
  /** True when `data` is not the whole stream. */
  truncated: boolean;
}

export interface TargetOutcome {
  agentId: string;
  cmdId: string;
  status: TargetStatus;
  /** The agent's own status when it answered; null when it never did. */
  agentStatus: CmdStatus | null;
  exitCode: number | null;
  signal: string | null;
  /** Why, for anything but `succeeded`. */
  reason?: string;
  stdout: StreamTail;
  stderr: StreamTail;
  resources: Resources | null;
  startedAt: number | null;
  finishedAt: number;
  /** Bytes of streamed output that never arrived (a chunk lost in transit); 0 when complete. */
  outputLostBytes: number;
}

/** What one command did on all its targets. */
export interface RunReport {
  runId: string;
  target: string;
  argv: string[];
  startedAt: number;
  finishedAt: number;
  /** One entry per target, sorted by agent id. */
  targets: TargetOutcome[];
  counts: Record<TargetStatus, number>;
  /** True when there was at least one target and every one succeeded. */
  ok: boolean;
}

/** Maps an agent's CMD_RESULT onto the controller's status, with a reason for anything but success. */
export function classifyResult(result: CmdResult): { status: TargetStatus; reason?: string } {
  const detail = result.error ? `: ${result.error}` : "";
  switch (result.status) {
    case "exited":
      if (result.signal) return { status: "failed", reason: `killed by ${result.signal}` };
      if (result.exitCode === 0) return { status: "succeeded" };
      return { status: "failed", reason: `exit code ${result.exitCode ?? "unknown"}` };
    case "timedOut":
      return { status: "timedOut", reason: `killed at its timeout${detail}` };
    case "cancelled":
      return { status: "cancelled", reason: `cancelled${detail}` };
    case "failedToStart":
      return { status: "failed", reason: `failed to start${detail}` };
    case "rejected":
      if (result.error?.startsWith(AGENT_ROLLED_BACK_PREFIX)) return { status: "rolledBack", reason: `${result.error}` };
      return { status: "failed", reason: `rejected by the agent${detail}` };
    case "lost":
      return { status: "failed", reason: `lost: the agent restarted while it ran${detail}` };
  }
}

export function countStatuses(outcomes: readonly TargetOutcome[]): Record<TargetStatus, number> {
  const counts = Object.fromEntries(TARGET_STATUSES.map((s) => [s, 0])) as Record<TargetStatus, number>;
  for (const o of outcomes) counts[o.status]++;
  return counts;
}
