import {
  CmdFinishedNotification,
  CmdListRequest,
  CmdStartedNotification,
  type CommandRecord,
  type CommandSummary,
  type CommandTargetStatus,
} from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../../controller/controller";
import { commandOutputUri } from "./command-output";

type CommandNode = { kind: "command"; command: CommandSummary } | { kind: "target"; commandId: string; target: CommandSummary["targets"][number] };

const KEEP = 200;

/** Worst status of a command's targets, for its icon and label. */
export function commandStatus(c: CommandSummary): CommandTargetStatus | "running" {
  if (c.state === "running") return "running";
  if (c.ok) return "succeeded";
  const order: CommandTargetStatus[] = ["failed", "timedOut", "unreachable", "cancelled", "rolledBack"];
  return order.find((s) => c.targets.some((t) => t.status === s)) ?? (c.targets.length ? "failed" : "unreachable");
}

/**
 * The Commands view: running and finished commands with targets, exit codes and durations.
 * `cmd.list` fills it; `cmd.started`/`cmd.finished` keep it current. Clicking one opens its
 * output as a read-only document.
 */
export class CommandsTree implements vscode.TreeDataProvider<CommandNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<CommandNode | undefined | void>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly commands = new Map<string, CommandSummary>();
  private readonly disposables: vscode.Disposable[] = [];
  private ticker: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly controller: Controller) {
    this.disposables.push(
      controller.onDidBecomeReady(() => void this.reload()),
      controller.onNotification(CmdStartedNotification.type, (r) => this.upsert(r)),
      controller.onNotification(CmdFinishedNotification.type, (r) => this.upsert(r)),
    );
  }

  get(id: string): CommandSummary | undefined {
    return this.commands.get(id);
  }

  running(): CommandSummary[] {
    return [...this.commands.values()].filter((c) => c.state === "running");
  }

  async reload(): Promise<void> {
    const list = await this.controller.request(CmdListRequest.type, { limit: KEEP });
    this.commands.clear();
    for (const c of list) this.commands.set(c.id, c);
    this.changed.fire();
    this.updateTicker();
  }

  upsert(record: CommandRecord | CommandSummary): void {
    this.commands.set(record.id, summarize(record));
    if (this.commands.size > KEEP) {
      const oldest = [...this.commands.values()].sort((a, b) => a.submittedAt - b.submittedAt).find((c) => c.state === "finished");
      if (oldest) this.commands.delete(oldest.id);
    }
    this.changed.fire();
    this.updateTicker();
  }

  // Only the running commands' elapsed time changes by itself: redraw once a second while any run.
  private updateTicker(): void {
    const anyRunning = this.running().length > 0;
    if (anyRunning && !this.ticker) this.ticker = setInterval(() => this.changed.fire(), 1000);
    if (!anyRunning && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }

  getTreeItem(node: CommandNode): vscode.TreeItem {
    if (node.kind === "target") {
      const t = node.target;
      const item = new vscode.TreeItem(t.agentId, vscode.TreeItemCollapsibleState.None);
      item.description = t.status + (t.exitCode !== null ? ` · exit ${t.exitCode}` : "") + (t.signal ? ` · ${t.signal}` : "");
      item.iconPath = statusIcon(t.status);
      item.command = { command: "vmc.command.showOutput", title: "Show Output", arguments: [node.commandId] };
      item.accessibilityInformation = { label: `Target ${t.agentId}, ${t.status}` };
      return item;
    }
    const c = node.command;
    const status = commandStatus(c);
    const text = c.shell ? (c.argv[0] ?? "") : c.argv.join(" ");
    const item = new vscode.TreeItem(text, c.targets.length > 1 ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None);
    item.id = `cmd:${c.id}`;
    const ms = (c.finishedAt ?? Date.now()) - c.submittedAt;
    const exit = c.targets.length === 1 && c.targets[0]!.exitCode !== null ? ` · exit ${c.targets[0]!.exitCode}` : "";
    item.description = `${c.target} · ${status}${exit} · ${formatDuration(ms)}`;
    item.tooltip = `${c.id}\n${text}\ntarget: ${c.target} (${c.targets.length} agent${c.targets.length === 1 ? "" : "s"})\nsubmitted ${new Date(c.submittedAt).toLocaleString()}`;
    item.iconPath = statusIcon(status);
    item.contextValue = `command command-${c.state}`;
    item.command = { command: "vmc.command.showOutput", title: "Show Output", arguments: [c.id] };
    item.accessibilityInformation = { label: `Command ${c.id}, ${status}` };
    item.resourceUri = commandOutputUri(c.id);
    return item;
  }

  getChildren(node?: CommandNode): CommandNode[] {
    if (!node) return [...this.commands.values()].sort((a, b) => b.submittedAt - a.submittedAt).map((command) => ({ kind: "command", command }));
    if (node.kind === "command") return node.command.targets.map((target) => ({ kind: "target", commandId: node.command.id, target }));
    return [];
  }

  dispose(): void {
    if (this.ticker) clearInterval(this.ticker);
    for (const d of this.disposables) d.dispose();
    this.changed.dispose();
  }
}

function summarize(r: CommandRecord | CommandSummary): CommandSummary {
  return { ...r, targets: r.targets.map((t) => ({ agentId: t.agentId, status: t.status, exitCode: t.exitCode, signal: t.signal })) };
}

function statusIcon(status: CommandTargetStatus | "running"): vscode.ThemeIcon {
  switch (status) {
    case "running":
    case "pending":
      return new vscode.ThemeIcon("loading~spin");
    case "succeeded":
      return new vscode.ThemeIcon("pass", new vscode.ThemeColor("testing.iconPassed"));
    case "cancelled":
    case "rolledBack":
      return new vscode.ThemeIcon("circle-slash");
    case "unreachable":
      return new vscode.ThemeIcon("debug-disconnect", new vscode.ThemeColor("errorForeground"));
    default:
      return new vscode.ThemeIcon("error", new vscode.ThemeColor("testing.iconFailed"));
  }
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}
