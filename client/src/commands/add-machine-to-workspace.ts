import * as vscode from "vscode";
import { guestUri } from "../files/guest-uri";
import type { MachineNode } from "../views/machines/nodes";
import { machineArg, type VmcCommand } from "./services";

/** Adds a machine's file system (or a guest folder) to the workspace: the Explorer then creates, deletes and renames there. */
export const addMachineToWorkspace: VmcCommand = {
  id: "vmc.machine.addToWorkspace",
  async run(s, arg, path) {
    const name = await machineArg(s, arg);
    if (!name) return;
    const node = arg as MachineNode | undefined;
    const dir = typeof path === "string" ? path : node && typeof node === "object" && node.kind === "guestEntry" && node.type === "directory" ? node.path : "/";
    const uri = guestUri(name, dir);
    const folders = vscode.workspace.workspaceFolders ?? [];
    if (folders.some((f) => f.uri.toString() === uri.toString())) return;
    vscode.workspace.updateWorkspaceFolders(folders.length, 0, { uri, name: `${name}:${dir}` });
  },
};
