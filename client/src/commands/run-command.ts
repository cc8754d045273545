import { AgentListRequest, CmdRunRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { commandOutputUri } from "../views/commands/command-output";
import { machineArg, type VmcCommand } from "./services";

/**
 * "Run Command on Machines…": a target pattern with a live preview of the agents it matches
 * (`agent.list {target}` as the pattern is typed), then the command line; the output opens as
 * a document that follows the command. `(target?, commandLine?)` skip the questions.
 */
export const runCommand: VmcCommand = {
  id: "vmc.command.run",
  async run(s, arg, given) {
    const fromRow = arg && typeof arg === "object" ? await machineArg(s, arg) : undefined;
    const target = typeof arg === "string" ? arg : fromRow ?? (await pickTarget(s));
    if (!target) return;
    const line =
      typeof given === "string"
        ? given
        : await vscode.window.showInputBox({ title: `Run on ${target}`, prompt: "Command line (run by /bin/sh on each agent)", placeHolder: "uname -a" });
    if (!line) return;
    const record = await s.controller.request(CmdRunRequest.type, { target, argv: [line], shell: true, wait: false });
    s.commands.upsert(record);
    await vscode.window.showTextDocument(commandOutputUri(record.id), { preview: true, preserveFocus: true });
    return record;
  },
};

async function pickTarget(s: Parameters<VmcCommand["run"]>[0]): Promise<string | undefined> {
  const qp = vscode.window.createQuickPick<vscode.QuickPickItem>();
  qp.title = "Run Command on Machines: target";
  qp.placeholder = "agent ids, globs (vm.*), lists (a,b), labels (role=worker) or a machine name";
  qp.matchOnDescription = false;
  qp.ignoreFocusOut = true;
  let generation = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const preview = (value: string) => {
    const mine = ++generation;
    if (timer) clearTimeout(timer);
    if (!value.trim()) {
      qp.items = s.agents.all().map((a) => ({ label: a.agentId, description: a.online ? "online" : "offline", alwaysShow: true }));
      qp.busy = false;
      return;
    }
    qp.busy = true;
    timer = setTimeout(async () => {
      try {
        const agents = await s.controller.request(AgentListRequest.type, { target: value.trim() });
        if (mine !== generation) return;
        qp.items = [
          { label: `Run on ${value.trim()}`, description: `${agents.length} agent${agents.length === 1 ? "" : "s"} match`, alwaysShow: true },
          { label: "", kind: vscode.QuickPickItemKind.Separator },
          ...agents.map((a) => ({ label: a.agentId, description: `${a.online ? "online" : "offline"}${a.vm ? ` · vm ${a.vm}` : ""}`, alwaysShow: true })),
        ];
      } catch (error) {
        if (mine !== generation) return;
        qp.items = [{ label: `$(error) ${(error as Error).message}`, alwaysShow: true }];
      } finally {
        if (mine === generation) qp.busy = false;
      }
    }, 150);
  };
  qp.onDidChangeValue(preview);
  preview("");
  qp.show();
  const picked = await new Promise<string | undefined>((resolve) => {
    qp.onDidAccept(() => {
      const item = qp.selectedItems[0];
      // Accepting a listed agent targets just that agent; accepting the header (or Enter) the typed pattern.
      if (item && !item.label.startsWith("Run on ") && !item.label.startsWith("$(error)") && item.label) resolve(item.label);
      else resolve(qp.value.trim() || undefined);
      qp.hide();
    });
    qp.onDidHide(() => resolve(undefined));
  });
  if (timer) clearTimeout(timer);
  qp.dispose();
  return picked;
}

