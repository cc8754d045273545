import * as vscode from "vscode";

/** The `vmc:` scheme: `vmc://<machine>/abs/path`. */
export const GUEST_SCHEME = "vmc";

export function guestUri(machine: string, path: string): vscode.Uri {
  return vscode.Uri.from({ scheme: GUEST_SCHEME, authority: machine, path: path.startsWith("/") ? path : `/${path}` });
}

export function parseGuestUri(uri: vscode.Uri): { machine: string; path: string } {
  if (uri.scheme !== GUEST_SCHEME || !uri.authority) throw vscode.FileSystemError.FileNotFound(uri);
  return { machine: uri.authority, path: uri.path || "/" };
}
