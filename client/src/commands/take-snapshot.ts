import { SnapshotTakeRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { machineArg, type VmcCommand } from "./services";

export const takeSnapshot: VmcCommand = {
  id: "vmc.machine.snapshot",
  /** `(machine, snapshotName?)`: asks for the name when not given. */
  async run(s, arg, given) {
    const name = await machineArg(s, arg);
    if (!name) return;
    const snapshot =
      typeof given === "string"
        ? given
        : await vscode.window.showInputBox({
            title: `Snapshot of ${name}`,
            prompt: "Snapshot name",
            value: `snap-${new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-")}`,
            validateInput: (v) => (/^[A-Za-z0-9_.-]{1,64}$/.test(v) ? undefined : "letters, digits, '.', '-' and '_' (at most 64)"),
          });
    if (!snapshot) return;
    const info = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Taking snapshot ${snapshot} of ${name}` }, () =>
      s.controller.request(SnapshotTakeRequest.type, { name, snapshot }),
    );
    s.machines.fireSnapshots(name);
    return info;
  },
};
