import * as vscode from "vscode";
import type { MachineNode } from "../views/machines/nodes";
import { machineArg, type VmcCommand } from "./services";

export const download: VmcCommand = {
  id: "vmc.machine.download",
  /** `(machine | guest file row, guestPath?: string, hostDirectory?: string)` */
  async run(s, arg, guestPath, hostDirectory) {
    const name = await machineArg(s, arg);
    if (!name) return;
    const node = arg as MachineNode | undefined;
    let source = typeof guestPath === "string" ? guestPath : node && typeof node === "object" && node.kind === "guestEntry" ? node.path : undefined;
    source ??= await vscode.window.showInputBox({ title: `Download from ${name}`, prompt: "Guest path (file or directory)", validateInput: (v) => (v.startsWith("/") ? undefined : "an absolute guest path") });
    if (!source) return;
    let dest = typeof hostDirectory === "string" ? hostDirectory : undefined;
    if (!dest) {
      const picked = await vscode.window.showOpenDialog({ canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: "Download here", defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri });
      dest = picked?.[0]?.fsPath;
    }
    if (!dest) return;
    return s.transfers.download(name, [source], dest);
  },
};
