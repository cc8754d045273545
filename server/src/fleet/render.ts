/** How agents and command results are shown: tables for people, JSON documents for programs. */
import type { Resources } from "@vmc/protocol/bus";
import type { OutputStream } from "./command";
import type { RunReport, StreamTail, TargetOutcome } from "./outcome";
import type { AgentInfo } from "./registry";

/** `vmc agents --json`: one entry per agent. */
export interface AgentJson {
  agentId: string;
  state: AgentInfo["state"];
  labels: Record<string, string>;
  os: { platform: string; release: string; arch: string; hostname: string } | null;
  agentVersion: string | null;
  protocolVersion: number | null;
  capabilities: { exec: boolean; stdinStream: boolean; transfer: boolean } | null;
  dataEndpoint: { host: string; port: number } | null;
  bootId: string;
  heartbeatMs: number;
  running: number;
  lastSeenAt: string;
  offlineReason?: string;
}

export function agentsJson(agents: readonly AgentInfo[]): AgentJson[] {
  return agents.map((a) => ({
    agentId: a.agentId,
    state: a.state,
    labels: a.labels,
    os: a.hello?.os ?? null,
    agentVersion: a.hello?.agentVersion ?? null,
    protocolVersion: a.hello?.protocolVersion ?? null,
    capabilities: a.hello?.capabilities ?? null,
    dataEndpoint: a.hello?.dataEndpoint ?? null,
    bootId: a.bootId,
    heartbeatMs: a.heartbeatMs,
    running: a.running,
    lastSeenAt: new Date(a.lastSeenAt).toISOString(),
    ...(a.offlineReason ? { offlineReason: a.offlineReason } : {}),
  }));
}

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return `${[line(header), ...rows.map(line)].join("\n")}\n`;
}

export function agentsTable(agents: readonly AgentInfo[]): string {
  if (agents.length === 0) return "no agents answered\n";
  const rows = agents.map((a) => [
    a.agentId,
    a.state,
    Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(",") || "-",
    a.hello ? `${a.hello.os.platform}/${a.hello.os.arch}` : "-",
    a.hello?.agentVersion ?? "-",
    a.hello?.os.hostname ?? "-",
  ]);
  return table(["AGENT", "STATE", "LABELS", "OS", "VERSION", "HOSTNAME"], rows);
}

/** `vmc run --json`: one entry per target. */
export interface TargetJson {
  agentId: string;
  cmdId: string;
  status: TargetOutcome["status"];
  agentStatus: TargetOutcome["agentStatus"];
  exitCode: number | null;
  signal: string | null;
  reason?: string;
  /** The tail of the output (UTF-8; invalid sequences replaced). */
  stdout: string;
  stderr: string;
  stdoutBytes: number;
  stderrBytes: number;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  resources: Resources | null;
  startedAt: string | null;
  finishedAt: string;
  /** Bytes of live output lost in transit (absent when none). */
  outputLostBytes?: number;
}

export interface RunJson {
  runId: string;
  target: string;
  argv: string[];
  ok: boolean;
  counts: RunReport["counts"];
  startedAt: string;
  finishedAt: string;
  targets: TargetJson[];
}

export function runJson(report: RunReport): RunJson {
  const iso = (ms: number) => new Date(ms).toISOString();
  const tail = (t: StreamTail) => t.data.toString("utf8");
  return {
    runId: report.runId,
    target: report.target,
    argv: report.argv,
    ok: report.ok,
    counts: report.counts,
    startedAt: iso(report.startedAt),
    finishedAt: iso(report.finishedAt),
    targets: report.targets.map((t) => ({
      agentId: t.agentId,
      cmdId: t.cmdId,
      status: t.status,
      agentStatus: t.agentStatus,
      exitCode: t.exitCode,
      signal: t.signal,
      ...(t.reason !== undefined ? { reason: t.reason } : {}),
      stdout: tail(t.stdout),
      stderr: tail(t.stderr),
      stdoutBytes: t.stdout.totalBytes,
      stderrBytes: t.stderr.totalBytes,
      stdoutTruncated: t.stdout.truncated,
      stderrTruncated: t.stderr.truncated,
      resources: t.resources,
      startedAt: t.startedAt === null ? null : iso(t.startedAt),
      finishedAt: iso(t.finishedAt),
      ...(t.outputLostBytes ? { outputLostBytes: t.outputLostBytes } : {}),
    })),
  };
}

function ms(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}s` : `${Math.round(n)}ms`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}K`;
  return `${(n / 1024 / 1024).toFixed(1)}M`;
}

/** The summary printed after a run: one row per target, then the counts. */
export function summaryTable(report: RunReport): string {
  const rows = report.targets.map((t) => [
    t.agentId,
    t.status,
    t.signal ?? (t.exitCode === null ? "-" : String(t.exitCode)),
    t.resources ? ms(t.resources.wallMs) : "-",
    t.resources ? ms(t.resources.cpuUserMs + t.resources.cpuSystemMs) : "-",
    t.resources ? bytes(t.resources.peakRssBytes) : "-",
    t.status === "succeeded" ? "" : (t.reason ?? ""),
  ]);
  const counts = Object.entries(report.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(", ");
  return `${table(["AGENT", "STATUS", "EXIT", "WALL", "CPU", "PEAK RSS", "REASON"], rows)}${report.targets.length} target${report.targets.length === 1 ? "" : "s"}: ${counts || "none"}\n`;
}

/**
 * Prefixes each line of several agents' interleaved output with the agent id, holding an
 * incomplete line per agent and stream (up to `maxPartial` bytes, then it is written as is).
 */
export class LinePrefixer {
  private readonly partial = new Map<string, Buffer>();

  constructor(
    private readonly write: (stream: OutputStream, text: Buffer) => void | Promise<void>,
    private readonly maxPartial = 64 * 1024,
  ) {}

  push(agentId: string, stream: OutputStream, data: Buffer): void | Promise<void> {
    const key = `${stream}\u0000${agentId}`;
    let buffer = this.partial.has(key) ? Buffer.concat([this.partial.get(key)!, data]) : data;
    const out: Buffer[] = [];
    let newline: number;
    while ((newline = buffer.indexOf(10)) >= 0) {
      out.push(Buffer.from(`${agentId}: `), buffer.subarray(0, newline + 1));
      buffer = buffer.subarray(newline + 1);
    }
    if (buffer.length > this.maxPartial) {
      out.push(Buffer.from(`${agentId}: `), buffer, Buffer.from("\n"));
      buffer = Buffer.alloc(0);
    }
    if (buffer.length) this.partial.set(key, Buffer.from(buffer));
    else this.partial.delete(key);
    return out.length ? this.write(stream, Buffer.concat(out)) : undefined;
  }

  /** Writes what is left of an agent's incomplete lines (when it is done). */
  flush(agentId: string): void {
    for (const stream of ["stdout", "stderr"] as const) {
      const key = `${stream}\u0000${agentId}`;
      const rest = this.partial.get(key);
      if (!rest) continue;
      this.partial.delete(key);
      void this.write(stream, Buffer.concat([Buffer.from(`${agentId}: `), rest, Buffer.from("\n")]));
    }
  }
}
