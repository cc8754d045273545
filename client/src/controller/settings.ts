import * as vscode from "vscode";

/** The extension's settings (`contributes.configuration`), read fresh on each use. */
export interface Settings {
  brokerUrl: string;
  driver: string;
  home: string;
  imageDir: string;
  vmcPath: string;
  nodePath: string;
  serverArgs: string[];
}

export function readSettings(): Settings {
  const c = vscode.workspace.getConfiguration("vmc");
  return {
    brokerUrl: c.get<string>("brokerUrl", "").trim(),
    driver: c.get<string>("driver", "").trim(),
    home: c.get<string>("home", "").trim(),
    imageDir: c.get<string>("imageDir", "").trim(),
    vmcPath: c.get<string>("vmcPath", "").trim(),
    nodePath: c.get<string>("nodePath", "").trim(),
    serverArgs: c.get<string[]>("serverArgs", []),
  };
}

/** Settings whose change needs the controller process restarted. */
export const SERVER_SETTINGS = ["vmc.brokerUrl", "vmc.driver", "vmc.home", "vmc.vmcPath", "vmc.nodePath", "vmc.serverArgs"];
