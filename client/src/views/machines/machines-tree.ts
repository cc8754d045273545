import {
  AgentChangedNotification,
  FsReadDirRequest,
  FsRenameRequest,
  SnapshotListRequest,
  VmListRequest,
  VmStateChangedNotification,
  type AgentInfo,
  type VmInfo,
} from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../../controller/controller";
import { guestUri } from "../../files/guest-uri";
import type { Transfers } from "../transfers/transfers";
import { machineStateIcon } from "./machine-icons";
import { joinGuestPath, machineOf, type MachineNode } from "./nodes";

const TREE_MIME = "application/vnd.code.tree.vmc.machines";
const URI_LIST = "text/uri-list";

/**
 * The Machines view: filled by `vm.list` when a server becomes ready, then kept current by
 * `vm.stateChanged` and `agent.changed` (never polled). Snapshots and guest folders are read
 * when expanded. Doubles as the drag-and-drop controller: files dropped on a machine or a guest
 * folder are uploaded; guest rows drag out as `vmc:` URIs.
 */
export class MachinesTree implements vscode.TreeDataProvider<MachineNode>, vscode.TreeDragAndDropController<MachineNode>, vscode.Disposable {
  readonly dropMimeTypes = [TREE_MIME, URI_LIST, "files"];
  readonly dragMimeTypes = [URI_LIST];
  private readonly changed = new vscode.EventEmitter<MachineNode | undefined | void>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly vms = new Map<string, VmInfo>();
  private readonly nodes = new Map<string, Extract<MachineNode, { kind: "machine" }>>();
  /**
   * A machine's child rows, kept as the same objects: a refresh of one of them (a snapshot taken)
   * then redraws only that row's children instead of replacing the rows, which would drop an
   * expansion the user began while they were being listed.
   */
  private readonly childRows = new Map<string, MachineNode[]>();
  private readonly agentOnline = new Map<string, boolean>();
  private readonly disposables: vscode.Disposable[] = [];
  private loaded = false;
  private loadError: string | undefined;

  constructor(
    private readonly controller: Controller,
    private readonly extensionUri: vscode.Uri,
    private readonly transfers: Transfers,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.disposables.push(
      controller.onDidBecomeReady(() => void this.reload()),
      controller.onNotification(VmStateChangedNotification.type, (change) => {
        if (change.cause === "deleted") {
          this.vms.delete(change.name);
          this.nodes.delete(change.name);
          this.childRows.delete(change.name);
          this.changed.fire();
          return;
        }
        const vm = this.vms.get(change.name);
        if (!vm || change.cause === "created") {
          void this.reload();
          return;
        }
        vm.state = change.state;
        this.fireMachine(change.name);
      }),
      controller.onNotification(AgentChangedNotification.type, (agent) => this.agentChanged(agent)),
    );
  }

  /** Machines as last seen (for quick picks). */
  machines(): VmInfo[] {
    return [...this.vms.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  machine(name: string): VmInfo | undefined {
    return this.vms.get(name);
  }

  async reload(): Promise<void> {
    try {
      const list = await this.controller.request(VmListRequest.type, undefined);
      this.vms.clear();
      for (const vm of list) this.vms.set(vm.name, vm);
      for (const name of [...this.nodes.keys()]) if (!this.vms.has(name)) this.nodes.delete(name);
      for (const name of [...this.childRows.keys()]) if (!this.vms.has(name)) this.childRows.delete(name);
      this.loadError = undefined;
    } catch (error) {
      this.loadError = (error as Error).message;
      this.log.error(`vm.list: ${this.loadError}`);
    }
    this.loaded = true;
    this.changed.fire();
  }

  /** Redraws one machine and its children (after a snapshot or a file change). */
  fireMachine(name: string): void {
    const vm = this.vms.get(name);
    const node = this.nodes.get(name);
    if (vm && node) {
      node.vm = vm;
      this.changed.fire(node);
    } else this.changed.fire();
  }

  /** Re-reads a machine's snapshots (after one was taken or deleted). */
  fireSnapshots(name: string): void {
    const row = this.childRows.get(name)?.find((n) => n.kind === "snapshots");
    if (row) this.changed.fire(row);
    else this.fireMachine(name);
  }

  /** Apply an answer of a lifecycle request at once (the notification follows anyway). */
  update(vm: VmInfo): void {
    this.vms.set(vm.name, vm);
    this.fireMachine(vm.name);
  }

  getTreeItem(node: MachineNode): vscode.TreeItem {
    switch (node.kind) {
      case "machine": {
        const vm = node.vm;
        const item = new vscode.TreeItem(vm.name, vscode.TreeItemCollapsibleState.Collapsed);
        item.id = `machine:${vm.name}`;
        const online = this.agentOnline.get(vm.agentId) ?? vm.agentOnline;
        item.description = `${vm.state}${vm.state === "running" && !online ? " (agent offline)" : ""}`;
        item.tooltip = new vscode.MarkdownString(
          `**${vm.name}** — ${vm.state}${vm.reason ? ` (${vm.reason})` : ""}\n\ndriver: ${vm.driver}${vm.accel ? ` (${vm.accel})` : ""}  \nagent: ${vm.agentId} (${online ? "online" : "offline"})${vm.memoryMiB ? `  \nmemory: ${vm.memoryMiB} MiB` : ""}${vm.cpus ? `  \ncpus: ${vm.cpus}` : ""}`,
        );
        item.iconPath = machineStateIcon(vm.state, this.extensionUri);
        item.contextValue = `machine machine-${vm.state}`;
        item.accessibilityInformation = { label: `Machine ${vm.name}, ${vm.state}` };
        return item;
      }
      case "machineAgent": {
        const online = this.agentOnline.get(node.agentId) ?? this.vms.get(node.vm)?.agentOnline ?? false;
        const item = new vscode.TreeItem(`Agent ${node.agentId}`, vscode.TreeItemCollapsibleState.None);
        item.id = `machine:${node.vm}:agent`;
        item.description = online ? "online" : "offline";
        item.iconPath = new vscode.ThemeIcon(online ? "pass-filled" : "circle-large-outline");
        item.contextValue = "machineAgent";
        item.accessibilityInformation = { label: `Agent ${node.agentId}, ${online ? "online" : "offline"}` };
        return item;
      }
      case "snapshots": {
        const item = new vscode.TreeItem("Snapshots", vscode.TreeItemCollapsibleState.Collapsed);
        item.id = `machine:${node.vm}:snapshots`;
        item.iconPath = new vscode.ThemeIcon("history");
        item.contextValue = "snapshots";
        item.accessibilityInformation = { label: `Snapshots of ${node.vm}` };
        return item;
      }
      case "snapshot": {
        const item = new vscode.TreeItem(node.snapshot.name, vscode.TreeItemCollapsibleState.None);
        item.id = `machine:${node.vm}:snapshot:${node.snapshot.name}`;
        item.description = new Date(node.snapshot.createdAt).toLocaleString() + (node.snapshot.withMemory ? " · with memory" : "");
        item.iconPath = new vscode.ThemeIcon("device-camera");
        item.contextValue = "snapshot";
        item.accessibilityInformation = { label: `Snapshot ${node.snapshot.name} of ${node.vm}` };
        return item;
      }
      case "files": {
        const item = new vscode.TreeItem("Files", vscode.TreeItemCollapsibleState.Collapsed);
        item.id = `machine:${node.vm}:files`;
        item.iconPath = new vscode.ThemeIcon("root-folder");
        item.resourceUri = guestUri(node.vm, "/");
        item.contextValue = "guestFolder guestRoot";
        item.accessibilityInformation = { label: `Files of ${node.vm}` };
        return item;
      }
      case "guestEntry": {
        const isDir = node.type === "directory";
        const uri = guestUri(node.vm, node.path);
        const item = new vscode.TreeItem(uri, isDir ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None);
        item.id = `machine:${node.vm}:file:${node.path}`;
        item.iconPath = isDir ? vscode.ThemeIcon.Folder : vscode.ThemeIcon.File;
        item.contextValue = isDir ? "guestFolder" : "guestFile";
        item.accessibilityInformation = { label: `${isDir ? "Folder" : "File"} ${node.path}` };
        if (!isDir) item.command = { command: "vmc.file.open", title: "Open", arguments: [uri] };
        return item;
      }
      case "message": {
        const item = new vscode.TreeItem(node.text, vscode.TreeItemCollapsibleState.None);
        item.iconPath = new vscode.ThemeIcon("info");
        return item;
      }
    }
  }

  async getChildren(node?: MachineNode): Promise<MachineNode[]> {
    if (!node) {
      if (!this.loaded) return [];
      if (this.loadError) return [{ kind: "message", text: `Cannot list machines: ${this.loadError}` }];
      return this.machines().map((vm) => {
        let n = this.nodes.get(vm.name);
        if (!n) this.nodes.set(vm.name, (n = { kind: "machine", vm }));
        n.vm = vm;
        return n;
      });
    }
    try {
      switch (node.kind) {
        case "machine": {
          let rows = this.childRows.get(node.vm.name);
          const agent = rows?.[0];
          if (!rows || agent?.kind !== "machineAgent" || agent.agentId !== node.vm.agentId) {
            rows = [
              { kind: "machineAgent", vm: node.vm.name, agentId: node.vm.agentId },
              { kind: "snapshots", vm: node.vm.name },
              { kind: "files", vm: node.vm.name },
            ];
            this.childRows.set(node.vm.name, rows);
          }
          return rows;
        }
        case "snapshots": {
          const snapshots = await this.controller.request(SnapshotListRequest.type, { name: node.vm });
          if (!snapshots.length) return [{ kind: "message", text: "No snapshots" }];
          return snapshots.map((snapshot) => ({ kind: "snapshot", vm: node.vm, snapshot }));
        }
        case "files":
          return await this.readDir(node.vm, "/");
        case "guestEntry":
          return node.type === "directory" ? await this.readDir(node.vm, node.path) : [];
        default:
          return [];
      }
    } catch (error) {
      return [{ kind: "message", text: (error as Error).message }];
    }
  }

  private async readDir(vm: string, path: string): Promise<MachineNode[]> {
    const entries = await this.controller.request(FsReadDirRequest.type, { target: vm, path });
    const dirsFirst = [...entries].sort((a, b) => Number(b.type === "directory") - Number(a.type === "directory") || a.name.localeCompare(b.name));
    return dirsFirst.map((e) => ({ kind: "guestEntry", vm, path: joinGuestPath(path, e.name), type: e.type }));
  }

  private agentChanged(agent: AgentInfo & { removed?: boolean }): void {
    this.agentOnline.set(agent.agentId, agent.online && !agent.removed);
    for (const vm of this.vms.values()) {
      if (vm.agentId === agent.agentId) {
        vm.agentOnline = agent.online && !agent.removed;
        this.fireMachine(vm.name);
      }
    }
  }

  handleDrag(source: readonly MachineNode[], data: vscode.DataTransfer): void {
    const uris = source.flatMap((n) => (n.kind === "guestEntry" ? [guestUri(n.vm, n.path).toString()] : []));
    if (uris.length) {
      data.set(URI_LIST, new vscode.DataTransferItem(uris.join("\r\n")));
      data.set(TREE_MIME, new vscode.DataTransferItem(source));
    }
  }

  async handleDrop(target: MachineNode | undefined, data: vscode.DataTransfer, token: vscode.CancellationToken): Promise<void> {
    const destination = target && dropDirectory(target);
    if (!target || !destination) return;
    const vm = machineOf(target)!;
    const internal = data.get(TREE_MIME);
    if (internal) {
      const moved = internal.value as MachineNode[];
      for (const n of moved) {
        if (n.kind !== "guestEntry" || n.vm !== vm) continue;
        const name = n.path.slice(n.path.lastIndexOf("/") + 1);
        const to = joinGuestPath(destination, name);
        if (to !== n.path) await this.controller.request(FsRenameRequest.type, { target: vm, from: n.path, to, overwrite: false });
      }
      this.changed.fire();
      return;
    }
    const hostPaths: string[] = [];
    const uriList = await data.get(URI_LIST)?.asString();
    for (const line of (uriList ?? "").split(/\r?\n/)) {
      if (!line.trim() || line.startsWith("#")) continue;
      const uri = vscode.Uri.parse(line.trim());
      if (uri.scheme === "file") hostPaths.push(uri.fsPath);
    }
    const blobs: vscode.DataTransferFile[] = [];
    if (!hostPaths.length) {
      data.forEach((item) => {
        const file = item.asFile();
        if (!file) return;
        if (file.uri?.scheme === "file") hostPaths.push(file.uri.fsPath);
        else blobs.push(file);
      });
    }
    if (token.isCancellationRequested) return;
    if (hostPaths.length) await this.transfers.upload(hostPaths, vm, destination);
    for (const file of blobs) await this.transfers.uploadBytes(file.name, await file.data(), vm, destination);
    this.changed.fire(target);
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
    this.changed.dispose();
  }
}

/** Where a drop onto this row lands: a machine's upload directory, a folder, a file's folder. */
function dropDirectory(node: MachineNode): string | undefined {
  switch (node.kind) {
    case "machine":
    case "machineAgent":
      return vscode.workspace.getConfiguration("vmc").get<string>("uploadDirectory", "/tmp") || "/tmp";
    case "files":
      return "/";
    case "guestEntry":
      return node.type === "directory" ? node.path : node.path.slice(0, node.path.lastIndexOf("/")) || "/";
    default:
      return undefined;
  }
}
