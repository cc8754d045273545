import { FsStatRequest } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { guestUri } from "../files/guest-uri";
import { machineArg, type VmcCommand } from "./services";

const LARGE = 5 * 1024 * 1024;
const BINARY = /\.(img|qcow2|iso|bin|so|o|a|gz|xz|zst|bz2|zip|tar|cpio|jpe?g|png|gif|pdf|mp[34]|elf|exe|dll|class|jar|pyc)$/i;

/** Opens a guest file in an editor (`(uri)`, `(machine, path)`, or asks), asking first when it is large or looks binary. */
export const openGuestFile: VmcCommand = {
  id: "vmc.file.open",
  async run(s, arg, maybePath) {
    let uri = arg instanceof vscode.Uri ? arg : typeof arg === "string" && typeof maybePath === "string" ? guestUri(arg, maybePath) : undefined;
    if (!uri) {
      const machine = await machineArg(s, arg);
      if (!machine) return;
      const path = await vscode.window.showInputBox({ title: `Open a file of ${machine}`, prompt: "Guest path", value: "/", validateInput: (v) => (v.startsWith("/") ? undefined : "an absolute guest path") });
      if (!path) return;
      uri = guestUri(machine, path);
    }
    const stat = await s.controller.request(FsStatRequest.type, { target: uri.authority, path: uri.path });
    const reason = stat.size > LARGE ? `is ${(stat.size / 1048576).toFixed(1)} MiB` : BINARY.test(uri.path) ? "looks binary" : undefined;
    if (reason) {
      const answer = await vscode.window.showWarningMessage(`${uri.path} ${reason}. Open it anyway?`, { modal: true }, "Open", "Download…");
      if (answer === "Download…") return vscode.commands.executeCommand("vmc.machine.download", uri.authority, uri.path);
      if (answer !== "Open") return;
    }
    await vscode.window.showTextDocument(uri, { preview: true });
  },
};
