import { CmdCancelRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { commandIdOf } from "./show-command-output";
import type { VmcCommand } from "./services";

export const cancelCommand: VmcCommand = {
  id: "vmc.command.cancel",
  async run(s, arg) {
    let id = typeof arg === "string" ? arg : commandIdOf(arg);
    if (!id) {
      const running = s.commands.running();
      if (!running.length) return void vscode.window.showInformationMessage("No command is running.");
      id = (await vscode.window.showQuickPick(running.map((c) => ({ label: c.argv.join(" "), description: c.target, id: c.id })), { placeHolder: "Cancel which command" }))?.id;
    }
    if (!id) return;
    const record = await s.controller.request(CmdCancelRequest.type, { id });
    s.commands.upsert(record);
    return record;
  },
};
