import * as vscode from "vscode";
import type { Transfer } from "../views/transfers/transfers";
import type { VmcCommand } from "./services";

export const cancelTransfer: VmcCommand = {
  id: "vmc.transfer.cancel",
  async run(s, arg) {
    let transfer = arg && typeof arg === "object" && "cancel" in arg ? (arg as Transfer) : undefined;
    if (!transfer) {
      const running = s.transfers.all().filter((t) => t.state === "running");
      if (!running.length) return void vscode.window.showInformationMessage("No transfer is running.");
      transfer = (await vscode.window.showQuickPick(running.map((t) => ({ label: t.title, description: `${Math.round(t.percentage)}%`, t })), { placeHolder: "Cancel which transfer" }))?.t;
    }
    if (transfer) s.transfers.cancel(transfer);
  },
};
