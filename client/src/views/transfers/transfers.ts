import { FileGetRequest, FilePutRequest, FsWriteFileRequest, type FileTransferResult, type TransferProgressValue } from "@vmc/protocol/rpc";
import { randomUUID } from "node:crypto";
import * as vscode from "vscode";
import type { Controller } from "../../controller/controller";

export interface Transfer {
  id: string;
  title: string;
  direction: "upload" | "download";
  state: "running" | "done" | "failed" | "cancelled";
  percentage: number;
  bytesDone: number;
  bytesTotal: number;
  rate: number;
  message?: string;
  startedAt: number;
  finishedAt?: number;
  cancel: vscode.CancellationTokenSource;
}

const KEEP_FINISHED = 50;

/**
 * Uploads and downloads (`file.put`/`file.get`) with a progress notification that can cancel
 * (cancelling the request sends `$/cancelRequest`), and the Transfers view listing them,
 * fed by `$/progress` for each transfer's token.
 */
export class Transfers implements vscode.TreeDataProvider<Transfer>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<Transfer | undefined | void>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly list: Transfer[] = [];

  constructor(
    private readonly controller: Controller,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  all(): readonly Transfer[] {
    return this.list;
  }

  upload(sources: string[], machine: string, directory: string): Promise<FileTransferResult | undefined> {
    const title = `Upload ${sources.length === 1 ? basename(sources[0]!) : `${sources.length} items`} to ${machine}:${directory}`;
    return this.run(title, "upload", (token, cancel) =>
      this.controller.request(FilePutRequest.type, { sources, destination: { target: machine, path: directory }, recursive: true, workDoneToken: token }, cancel),
    );
  }

  download(machine: string, paths: string[], destination: string): Promise<FileTransferResult | undefined> {
    const title = `Download ${paths.length === 1 ? `${machine}:${paths[0]}` : `${paths.length} items from ${machine}`} to ${destination}`;
    return this.run(title, "download", (token, cancel) =>
      this.controller.request(FileGetRequest.type, { sources: paths.map((path) => ({ target: machine, path })), destination, recursive: true, workDoneToken: token }, cancel),
    );
  }

  /** A file dropped from outside the host's file system (a browser drop): its bytes, via `fs.writeFile`. */
  async uploadBytes(name: string, data: Uint8Array, machine: string, directory: string): Promise<void> {
    const path = `${directory.replace(/\/$/, "")}/${name}`;
    await this.run(`Upload ${name} to ${machine}:${directory}`, "upload", async (_token, cancel) => {
      await this.controller.request(FsWriteFileRequest.type, { target: machine, path, data: Buffer.from(data).toString("base64"), create: true, overwrite: true }, cancel);
      return undefined;
    });
  }

  cancel(transfer: Transfer): void {
    transfer.cancel.cancel();
  }

  private async run<R>(title: string, direction: Transfer["direction"], start: (token: string, cancel: vscode.CancellationToken) => Promise<R>): Promise<R | undefined> {
    const transfer: Transfer = {
      id: randomUUID(),
      title,
      direction,
      state: "running",
      percentage: 0,
      bytesDone: 0,
      bytesTotal: 0,
      rate: 0,
      startedAt: Date.now(),
      cancel: new vscode.CancellationTokenSource(),
    };
    this.list.unshift(transfer);
    this.trim();
    this.changed.fire();
    this.log.info(`${title}: started`);
    return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, notificationCancel) => {
      notificationCancel.onCancellationRequested(() => transfer.cancel.cancel());
      let reported = 0;
      const subscription = this.controller.onProgress<TransferProgressValue>(`vmc-transfer-${transfer.id}`, (value) => {
        transfer.bytesDone = value.bytesDone;
        transfer.bytesTotal = value.bytesTotal;
        transfer.rate = value.rate;
        const percentage = value.percentage ?? (value.bytesTotal ? (100 * value.bytesDone) / value.bytesTotal : 0);
        if (percentage > reported) {
          progress.report({ increment: percentage - reported, message: `${formatBytes(value.bytesDone)} of ${formatBytes(value.bytesTotal)}${value.rate ? ` · ${formatBytes(value.rate)}/s` : ""}` });
          reported = percentage;
        }
        transfer.percentage = percentage;
        this.changed.fire(transfer);
      });
      try {
        const result = await start(`vmc-transfer-${transfer.id}`, transfer.cancel.token);
        transfer.state = "done";
        transfer.percentage = 100;
        this.log.info(`${title}: done`);
        return result;
      } catch (error) {
        const cancelled = transfer.cancel.token.isCancellationRequested;
        transfer.state = cancelled ? "cancelled" : "failed";
        transfer.message = (error as Error).message;
        this.log.warn(`${title}: ${transfer.state}: ${transfer.message}`);
        if (!cancelled) void vscode.window.showErrorMessage(`${title} failed: ${transfer.message}`);
        return undefined;
      } finally {
        transfer.finishedAt = Date.now();
        subscription.dispose();
        this.changed.fire();
      }
    });
  }

  private trim(): void {
    let finished = 0;
    for (let i = 0; i < this.list.length; i++) {
      if (this.list[i]!.state !== "running" && ++finished > KEEP_FINISHED) this.list.splice(i--, 1);
    }
  }

  getTreeItem(t: Transfer): vscode.TreeItem {
    const item = new vscode.TreeItem(t.title, vscode.TreeItemCollapsibleState.None);
    item.id = t.id;
    const pct = Math.round(t.percentage);
    item.description =
      t.state === "running" ? `${pct}%${t.bytesTotal ? ` · ${formatBytes(t.bytesDone)}/${formatBytes(t.bytesTotal)}` : ""}` : `${t.state}${t.finishedAt ? ` · ${((t.finishedAt - t.startedAt) / 1000).toFixed(1)} s` : ""}`;
    item.tooltip = t.message ?? t.title;
    item.iconPath = new vscode.ThemeIcon(
      t.state === "running" ? "loading~spin" : t.state === "done" ? "check" : t.state === "cancelled" ? "circle-slash" : "error",
    );
    item.contextValue = `transfer transfer-${t.state}`;
    item.accessibilityInformation = { label: `Transfer ${t.title}, ${t.state === "running" ? `${pct}%` : t.state}` };
    return item;
  }

  getChildren(t?: Transfer): Transfer[] {
    return t ? [] : this.list;
  }

  dispose(): void {
    for (const t of this.list) t.cancel.dispose();
    this.changed.dispose();
  }
}

function basename(p: string): string {
  return p.replace(/\/+$/, "").split(/[\\/]/).pop() ?? p;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
