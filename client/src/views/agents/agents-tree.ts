import { AgentChangedNotification, AgentListRequest, type AgentInfo } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../../controller/controller";

type AgentNode = { kind: "group"; prefix: string } | { kind: "agent"; agent: AgentInfo } | { kind: "label"; agentId: string; key: string; value: string };

/** Group of an agent id: its first dot- or dash-separated word (`vm.1.a` → `vm`). */
export function agentPrefix(agentId: string): string {
  const m = /^[^.\-_]+/.exec(agentId);
  return m ? m[0] : agentId;
}

/**
 * The Agents view: every agent the controller knows, in VMs or on real hosts, grouped by id
 * prefix, with its labels as children. `agent.list` fills it; `agent.changed` keeps it current.
 */
export class AgentsTree implements vscode.TreeDataProvider<AgentNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<AgentNode | undefined | void>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly agents = new Map<string, AgentInfo>();
  private readonly disposables: vscode.Disposable[] = [];
  private pending: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly controller: Controller) {
    this.disposables.push(
      controller.onDidBecomeReady(() => void this.reload()),
      controller.onNotification(AgentChangedNotification.type, (agent) => {
        if (agent.removed) this.agents.delete(agent.agentId);
        else {
          const { removed: _removed, ...info } = agent;
          this.agents.set(agent.agentId, info);
        }
        this.scheduleRefresh();
      }),
    );
  }

  get(agentId: string): AgentInfo | undefined {
    return this.agents.get(agentId);
  }

  all(): AgentInfo[] {
    return [...this.agents.values()].sort((a, b) => a.agentId.localeCompare(b.agentId));
  }

  async reload(discover = false): Promise<void> {
    const list = await this.controller.request(AgentListRequest.type, discover ? { discover: true } : undefined);
    this.agents.clear();
    for (const a of list) this.agents.set(a.agentId, a);
    this.changed.fire();
  }

  // Many agents changing at once (a fleet coming up) redraw the view once per frame, not once each.
  private scheduleRefresh(): void {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.changed.fire();
    }, 16);
  }

  getTreeItem(node: AgentNode): vscode.TreeItem {
    switch (node.kind) {
      case "group": {
        const members = this.all().filter((a) => agentPrefix(a.agentId) === node.prefix);
        const item = new vscode.TreeItem(node.prefix, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `group:${node.prefix}`;
        item.description = `${members.filter((a) => a.online).length}/${members.length} online`;
        item.iconPath = new vscode.ThemeIcon("server-environment");
        item.accessibilityInformation = { label: `Agent group ${node.prefix}` };
        return item;
      }
      case "agent": {
        const a = node.agent;
        const labels = Object.entries(a.labels);
        const item = new vscode.TreeItem(a.agentId, labels.length ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None);
        item.id = `agent:${a.agentId}`;
        item.description = [a.online ? "online" : "offline", a.vm ? `vm ${a.vm}` : "host", a.running ? `${a.running} running` : "", labels.map(([k, v]) => `${k}=${v}`).join(" ")]
          .filter(Boolean)
          .join(" · ");
        item.tooltip = `${a.agentId}\n${a.online ? "online" : `offline${a.offlineReason ? ` (${a.offlineReason})` : ""}`}\nlast seen ${new Date(a.lastSeen).toLocaleString()}${a.os ? `\nos: ${a.os}` : ""}${a.agentVersion ? `\nagent ${a.agentVersion}` : ""}`;
        item.iconPath = new vscode.ThemeIcon(a.vm ? "vm" : "server", new vscode.ThemeColor(a.online ? "testing.iconPassed" : "disabledForeground"));
        item.contextValue = `agent agent-${a.online ? "online" : "offline"}${a.vm ? " agent-vm" : ""}`;
        item.accessibilityInformation = { label: `Agent ${a.agentId}, ${a.online ? "online" : "offline"}` };
        return item;
      }
      case "label": {
        const item = new vscode.TreeItem(`${node.key}=${node.value}`, vscode.TreeItemCollapsibleState.None);
        item.iconPath = new vscode.ThemeIcon("tag");
        return item;
      }
    }
  }

  getChildren(node?: AgentNode): AgentNode[] {
    if (!node) {
      const prefixes = [...new Set(this.all().map((a) => agentPrefix(a.agentId)))].sort();
      // One group adds a level for nothing: list the agents directly.
      if (prefixes.length <= 1) return this.all().map((agent) => ({ kind: "agent", agent }));
      return prefixes.map((prefix) => ({ kind: "group", prefix }));
    }
    if (node.kind === "group") return this.all().filter((a) => agentPrefix(a.agentId) === node.prefix).map((agent) => ({ kind: "agent", agent }));
    if (node.kind === "agent") return Object.entries(node.agent.labels).map(([key, value]) => ({ kind: "label", agentId: node.agent.agentId, key, value }));
    return [];
  }

  dispose(): void {
    if (this.pending) clearTimeout(this.pending);
    for (const d of this.disposables) d.dispose();
    this.changed.dispose();
  }
}
