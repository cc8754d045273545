import { VmDeleteRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { machineArg, type VmcCommand } from "./services";

export const deleteMachine: VmcCommand = {
  id: "vmc.machine.delete",
  async run(s, arg) {
    const name = await machineArg(s, arg);
    if (!name) return;
    const running = s.machines.machine(name)?.state !== "stopped";
    const answer = await vscode.window.showWarningMessage(
      `Delete machine ${name}${running ? " (it is not stopped: it will be stopped first)" : ""}? Its disk and snapshots are removed.`,
      { modal: true },
      "Delete",
    );
    if (answer !== "Delete") return;
    await s.controller.request(VmDeleteRequest.type, { name, force: running });
    await s.machines.reload();
  },
};
