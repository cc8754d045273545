import { CmdFinishedNotification, CmdGetRequest, CmdOutputNotification, type CommandRecord } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../../controller/controller";

/** Read-only documents with a command's output: `vmc-output:/<id>.log`. */
export const OUTPUT_SCHEME = "vmc-output";

export function commandOutputUri(id: string): vscode.Uri {
  return vscode.Uri.from({ scheme: OUTPUT_SCHEME, path: `/${id}.log` });
}

/**
 * Serves command output documents from `cmd.get` (the kept tails of each target's streams) and
 * refreshes an open one when `cmd.output`/`cmd.finished` say it changed, at most every 300 ms.
 */
export class CommandOutputProvider implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;
  private readonly open = new Set<string>();
  /** Recently finished ids: a finish that lands while a document is being read must still refresh it. */
  private readonly finished = new Set<string>();
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly controller: Controller,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.disposables.push(
      controller.onNotification(CmdOutputNotification.type, (e) => this.touch(e.id)),
      controller.onNotification(CmdFinishedNotification.type, (r) => {
        this.finished.add(r.id);
        if (this.finished.size > 1000) this.finished.delete(this.finished.values().next().value!);
        this.touch(r.id);
      }),
      vscode.workspace.onDidCloseTextDocument((d) => {
        if (d.uri.scheme === OUTPUT_SCHEME) this.open.delete(idOf(d.uri));
      }),
    );
  }

  async provideTextDocumentContent(uri: vscode.Uri, token: vscode.CancellationToken): Promise<string> {
    const id = idOf(uri);
    this.open.add(id);
    try {
      const record = await this.controller.request(CmdGetRequest.type, { id }, token);
      this.log.info(`output document ${id}: ${record.state}`);
      if (record.state === "running" && this.finished.has(id)) this.touch(id);
      return renderRecord(record);
    } catch (error) {
      return `Cannot read command ${id}: ${(error as Error).message}\n`;
    }
  }

  private touch(id: string): void {
    if (!this.open.has(id) || this.timers.has(id)) return;
    this.timers.set(
      id,
      setTimeout(() => {
        this.timers.delete(id);
        this.log.info(`output document ${id}: changed`);
        this.changed.fire(commandOutputUri(id));
      }, 300),
    );
  }

  dispose(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    for (const d of this.disposables) d.dispose();
    this.changed.dispose();
  }
}

function idOf(uri: vscode.Uri): string {
  return uri.path.replace(/^\//, "").replace(/\.log$/, "");
}

export function renderRecord(r: CommandRecord): string {
  const lines = [`# ${r.shell ? r.argv[0] : r.argv.join(" ")}`, `# id ${r.id} · target ${r.target} · ${r.state}${r.finishedAt ? ` · ${r.finishedAt - r.submittedAt} ms` : ""}`, ""];
  for (const t of r.targets) {
    if (r.targets.length > 1) lines.push(`── ${t.agentId} ──`);
    const stdout = Buffer.from(t.stdout.data, "base64").toString("utf8");
    const stderr = Buffer.from(t.stderr.data, "base64").toString("utf8");
    if (t.stdout.truncated) lines.push(`[… first ${t.stdout.totalBytes - Buffer.byteLength(stdout)} bytes of stdout not kept]`);
    if (stdout) lines.push(stdout.replace(/\n$/, ""));
    if (stderr) {
      lines.push("[stderr]");
      if (t.stderr.truncated) lines.push(`[… first ${t.stderr.totalBytes - Buffer.byteLength(stderr)} bytes not kept]`);
      lines.push(stderr.replace(/\n$/, ""));
    }
    lines.push(`[${t.status}${t.exitCode !== null ? `, exit ${t.exitCode}` : ""}${t.signal ? `, ${t.signal}` : ""}${t.reason ? `: ${t.reason}` : ""}]`, "");
  }
  return lines.join("\n");
}
