import type { VmState } from "@vmc/protocol/vm";
import * as vscode from "vscode";

/** One icon per VM state: codicons where one fits, media/ SVGs (light and dark) otherwise. */
export function machineStateIcon(state: VmState, extensionUri: vscode.Uri): vscode.ThemeIcon | { light: vscode.Uri; dark: vscode.Uri } {
  switch (state) {
    case "running":
      return new vscode.ThemeIcon("vm-running", new vscode.ThemeColor("testing.iconPassed"));
    case "stopped":
      return new vscode.ThemeIcon("vm-outline");
    case "starting":
    case "stopping":
      return new vscode.ThemeIcon("loading~spin");
    case "error":
      return new vscode.ThemeIcon("error", new vscode.ThemeColor("errorForeground"));
    case "paused":
    case "saved":
      return {
        light: vscode.Uri.joinPath(extensionUri, "media", `machine-${state}-light.svg`),
        dark: vscode.Uri.joinPath(extensionUri, "media", `machine-${state}-dark.svg`),
      };
  }
}
