import * as vscode from "vscode";
import { commandOutputUri } from "../views/commands/command-output";
import type { VmcCommand } from "./services";

export const showCommandOutput: VmcCommand = {
  id: "vmc.command.showOutput",
  async run(s, arg) {
    let id = typeof arg === "string" ? arg : commandIdOf(arg);
    if (!id) {
      const all = s.commands.getChildren().flatMap((n) => (n.kind === "command" ? [n.command] : []));
      id = (await vscode.window.showQuickPick(all.map((c) => ({ label: c.shell ? (c.argv[0] ?? "") : c.argv.join(" "), description: `${c.target} · ${c.state}`, id: c.id })), { placeHolder: "Command" }))?.id;
    }
    if (!id) return;
    await vscode.window.showTextDocument(commandOutputUri(id), { preview: true });
  },
};

export function commandIdOf(arg: unknown): string | undefined {
  if (arg && typeof arg === "object" && "kind" in arg) {
    const node = arg as { kind: string; command?: { id: string }; commandId?: string };
    return node.command?.id ?? node.commandId;
  }
  return undefined;
}
