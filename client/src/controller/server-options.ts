import * as path from "node:path";
import type * as vscode from "vscode";
import type { Executable } from "vscode-languageclient/node";
import { type BrokerCredentials, withCredentials } from "./credentials";
import type { Settings } from "./settings";

/**
 * How to start `vmc serve --stdio`: the bundled dist/vmc.mjs run by the extension host's own
 * Node (Electron as Node via ELECTRON_RUN_AS_NODE), unless the settings name others.
 */
export function serverExecutable(context: vscode.ExtensionContext, settings: Settings, credentials: BrokerCredentials | undefined): Executable {
  const vmc = settings.vmcPath || path.join(context.extensionPath, "dist", "vmc.mjs");
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (!settings.nodePath) env.ELECTRON_RUN_AS_NODE = "1";
  if (settings.brokerUrl) env.VMC_BROKER = withCredentials(settings.brokerUrl, credentials);
  if (settings.home) env.VMC_HOME = settings.home;
  if (settings.driver) env.VMC_DRIVER = settings.driver;
  return {
    command: settings.nodePath || process.execPath,
    args: [vmc, "serve", "--stdio", ...settings.serverArgs],
    options: { env },
  };
}
