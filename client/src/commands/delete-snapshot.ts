import { SnapshotDeleteRequest, SnapshotListRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { MachineNode } from "../views/machines/nodes";
import { machineArg, type VmcCommand } from "./services";

export const deleteSnapshot: VmcCommand = {
  id: "vmc.snapshot.delete",
  async run(s, arg, given) {
    const node = arg as MachineNode | undefined;
    const name = await machineArg(s, arg);
    if (!name) return;
    let snapshot = node && typeof node === "object" && node.kind === "snapshot" ? node.snapshot.name : typeof given === "string" ? given : undefined;
    if (!snapshot) {
      const list = await s.controller.request(SnapshotListRequest.type, { name });
      snapshot = (await vscode.window.showQuickPick(list.map((x) => x.name), { placeHolder: `Delete which snapshot of ${name}` })) ?? undefined;
    }
    if (!snapshot) return;
    await s.controller.request(SnapshotDeleteRequest.type, { name, snapshot });
    s.machines.fireSnapshots(name);
  },
};
