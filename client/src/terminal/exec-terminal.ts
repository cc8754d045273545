import { CmdCancelRequest, CmdFinishedNotification, CmdInputRequest, CmdOutputNotification, CmdRunRequest, type CommandOutputEvent, type CommandRecord } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../controller/controller";
import { LineEditor } from "./line-editor";

/**
 * A terminal on one machine: each line typed at the prompt runs through `cmd.run` (shell,
 * interactive, streamed by `cmd.output`); while it runs, typed lines go to its stdin
 * (`cmd.input`), Ctrl-D closes stdin, Ctrl-C cancels it (`cmd.cancel`). The exit code is shown
 * after each command; up/down walk this session's history. `cd DIR` changes the directory the
 * next commands run in.
 */
export class ExecTerminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private readonly editor = new LineEditor();
  private readonly inputEditor = new LineEditor();
  private readonly disposables: vscode.Disposable[] = [];
  private running: { id?: string; early: CommandOutputEvent[]; finished?: CommandRecord; cancelled: boolean } | undefined;
  private cwd: string | undefined;
  private cdPending = false;
  private cdOutput = "";
  private lastWasNewline = true;

  constructor(
    private readonly controller: Controller,
    readonly machine: string,
  ) {}

  open(): void {
    this.disposables.push(
      this.controller.onNotification(CmdOutputNotification.type, (e) => this.output(e)),
      this.controller.onNotification(CmdFinishedNotification.type, (r) => {
        if (!this.running) return;
        if (this.running.id === r.id) this.finish(r);
        else if (!this.running.id) this.running.finished = r;
      }),
    );
    this.write(`Connected to ${this.machine}: commands run through its agent (no pty). Ctrl-C cancels, Ctrl-D ends input.\r\n`);
    this.prompt();
  }

  close(): void {
    if (this.running?.id) void this.controller.request(CmdCancelRequest.type, { id: this.running.id }).catch(() => undefined);
    for (const d of this.disposables) d.dispose();
  }

  handleInput(data: string): void {
    if (this.running) return this.inputWhileRunning(data);
    if (data === "\x03") {
      this.write("^C\r\n");
      this.editor.clear();
      this.prompt();
      return;
    }
    if (data === "\x04" && !this.editor.text) {
      this.write("\r\n");
      this.closeEmitter.fire(0);
      return;
    }
    if (data === "\x0c") {
      this.write("\x1b[2J\x1b[H");
      this.prompt();
      this.write(this.editor.text);
      return;
    }
    const { echo, lines } = this.editor.feed(data);
    this.write(echo);
    const line = lines[0];
    if (line !== undefined) void this.run(line);
  }

  private inputWhileRunning(data: string): void {
    const run = this.running!;
    if (data === "\x03") {
      this.write("^C");
      run.cancelled = true;
      if (run.id) void this.controller.request(CmdCancelRequest.type, { id: run.id }).catch((e: Error) => this.write(`\r\n[cancel failed: ${e.message}]\r\n`));
      return;
    }
    if (data === "\x04") {
      const pending = this.inputEditor.text;
      this.inputEditor.clear();
      if (run.id) void this.send(run.id, pending, true);
      return;
    }
    const { echo, lines } = this.inputEditor.feed(data);
    this.write(echo);
    for (const line of lines) if (run.id) void this.send(run.id, `${line}\n`, false);
  }

  private async send(id: string, text: string, eof: boolean): Promise<void> {
    try {
      await this.controller.request(CmdInputRequest.type, { id, data: Buffer.from(text).toString("base64"), ...(eof ? { eof: true } : {}) });
    } catch (error) {
      this.write(`\r\n[input not delivered: ${(error as Error).message}]\r\n`);
    }
  }

  private async run(line: string): Promise<void> {
    this.editor.remember(line);
    if (!line.trim()) return this.prompt();
    const cd = /^\s*cd(?:\s+(.*?))?\s*$/.exec(line);
    this.running = { early: [], cancelled: false };
    this.cdPending = !!cd;
    this.cdOutput = "";
    this.inputEditor.clear();
    try {
      const command = cd ? `cd ${cd[1] ?? "~"} && pwd` : line;
      const record = await this.controller.request(CmdRunRequest.type, {
        target: this.machine,
        argv: [command],
        shell: true,
        interactive: !cd,
        ...(this.cwd ? { cwd: this.cwd } : {}),
        stream: true,
        wait: false,
      });
      this.running.id = record.id;
      const early = this.running.early.filter((e) => e.id === record.id);
      this.running.early = [];
      for (const e of early) this.output(e);
      const finished = this.running.finished?.id === record.id ? this.running.finished : record.state === "finished" ? record : undefined;
      if (finished) this.finish(finished);
      else if (this.running.cancelled) await this.controller.request(CmdCancelRequest.type, { id: record.id });
    } catch (error) {
      this.running = undefined;
      this.write(`\x1b[31m${(error as Error).message}\x1b[0m\r\n`);
      this.prompt();
    }
  }

  private output(e: CommandOutputEvent): void {
    const run = this.running;
    if (!run) return;
    if (!run.id) {
      if (run.early.length < 10_000) run.early.push(e);
      return;
    }
    if (e.id !== run.id) return;
    const text = Buffer.from(e.data, "base64").toString("utf8");
    if (this.cdPending && e.stream === "stdout") {
      this.cdOutput += text;
      return;
    }
    this.write(text.replace(/\r?\n/g, "\r\n"), e.stream === "stderr");
  }

  private finish(record: CommandRecord): void {
    const run = this.running;
    if (!run || (run.id && run.id !== record.id)) return;
    this.running = undefined;
    const t = record.targets[0];
    const wasCd = this.cdPending;
    this.cdPending = false;
    if (wasCd && t?.status === "succeeded") {
      const dir = (this.cdOutput || Buffer.from(t.stdout.data, "base64").toString("utf8")).trim().split("\n").pop();
      if (dir?.startsWith("/")) this.cwd = dir;
    }
    this.cdOutput = "";
    if (!this.lastWasNewline) this.write("\r\n");
    if (!t) this.write("\x1b[33m[no agent matched]\x1b[0m\r\n");
    else if (t.status === "succeeded" || t.status === "failed") {
      if (!wasCd || t.exitCode !== 0) this.write(`\x1b[${t.exitCode === 0 ? 90 : 31}m[exit ${t.exitCode}]\x1b[0m\r\n`);
    } else this.write(`\x1b[33m[${t.status}${t.signal ? ` ${t.signal}` : ""}${t.reason ? `: ${t.reason}` : ""}]\x1b[0m\r\n`);
    this.prompt();
  }

  private prompt(): void {
    this.write(`\x1b[1;32m${this.machine}\x1b[0m${this.cwd ? `:\x1b[1;34m${this.cwd}\x1b[0m` : ""}$ `);
  }

  private write(text: string, stderr = false): void {
    if (!text) return;
    this.lastWasNewline = text.endsWith("\n");
    this.writeEmitter.fire(stderr ? `\x1b[31m${text}\x1b[0m` : text);
  }
}

/** Opens (or shows) the terminal of a machine. */
export function openExecTerminal(controller: Controller, machine: string): vscode.Terminal {
  const name = `VMC: ${machine}`;
  const existing = vscode.window.terminals.find((t) => t.name === name && t.exitStatus === undefined);
  if (existing) {
    existing.show();
    return existing;
  }
  const terminal = vscode.window.createTerminal({ name, pty: new ExecTerminal(controller, machine), iconPath: new vscode.ThemeIcon("vm") });
  terminal.show();
  return terminal;
}
