import * as vscode from "vscode";
import { machineArg, type VmcCommand } from "./services";
import type { MachineNode } from "../views/machines/nodes";

export const upload: VmcCommand = {
  id: "vmc.machine.upload",
  /** `(machine | folder row, hostPaths?: string[], guestDirectory?: string)` */
  async run(s, arg, paths, directory) {
    const name = await machineArg(s, arg);
    if (!name) return;
    const node = arg as MachineNode | undefined;
    let sources = Array.isArray(paths) ? paths.filter((p): p is string => typeof p === "string") : [];
    if (!sources.length) {
      const picked = await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectFolders: true, canSelectMany: true, openLabel: `Upload to ${name}` });
      sources = (picked ?? []).filter((u) => u.scheme === "file").map((u) => u.fsPath);
    }
    if (!sources.length) return;
    let dest = typeof directory === "string" ? directory : node && typeof node === "object" && node.kind === "guestEntry" && node.type === "directory" ? node.path : undefined;
    dest ??= await vscode.window.showInputBox({
      title: `Upload to ${name}`,
      prompt: "Guest directory",
      value: vscode.workspace.getConfiguration("vmc").get<string>("uploadDirectory", "/tmp"),
      validateInput: (v) => (v.startsWith("/") ? undefined : "an absolute guest path"),
    });
    if (!dest) return;
    const result = await s.transfers.upload(sources, name, dest);
    s.machines.fireMachine(name);
    return result;
  },
};
