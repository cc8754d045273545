import { SnapshotListRequest, SnapshotRestoreRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { MachineNode } from "../views/machines/nodes";
import { machineArg, type VmcCommand } from "./services";

export const restoreSnapshot: VmcCommand = {
  id: "vmc.machine.restore",
  /** From a snapshot row, or `(machine, snapshotName?)` with a pick from the machine's snapshots. */
  async run(s, arg, given) {
    const node = arg as MachineNode | undefined;
    const name = await machineArg(s, arg);
    if (!name) return;
    let snapshot = node && typeof node === "object" && node.kind === "snapshot" ? node.snapshot.name : typeof given === "string" ? given : undefined;
    if (!snapshot) {
      const list = await s.controller.request(SnapshotListRequest.type, { name });
      if (!list.length) return void vscode.window.showInformationMessage(`${name} has no snapshots.`);
      snapshot = (await vscode.window.showQuickPick(list.map((x) => ({ label: x.name, description: new Date(x.createdAt).toLocaleString() })), { placeHolder: `Restore ${name} to` }))?.label;
    }
    if (!snapshot) return;
    const vm = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Restoring ${name} to ${snapshot}` }, () =>
      s.controller.request(SnapshotRestoreRequest.type, { name, snapshot: snapshot! }),
    );
    s.machines.update(vm);
    return vm;
  },
};
