/**
 * The VM Controller extension: starts `vmc serve --stdio` and puts machines, agents, commands,
 * transfers, exec terminals and guest files (`vmc:`) in the editor. Everything here is wiring.
 */
import * as vscode from "vscode";
import { registerCommands } from "./commands";
import type { Services } from "./commands/services";
import { Controller } from "./controller/controller";
import { SERVER_SETTINGS } from "./controller/settings";
import { registerGuestFileSystem } from "./files/guest-file-system";
import { createStatusBar } from "./ui/status-bar";
import { AgentsTree } from "./views/agents/agents-tree";
import { CommandOutputProvider, OUTPUT_SCHEME } from "./views/commands/command-output";
import { CommandsTree } from "./views/commands/commands-tree";
import { MachinesTree } from "./views/machines/machines-tree";
import { Transfers } from "./views/transfers/transfers";

let controller: Controller | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel("VM Controller", { log: true });
  controller = new Controller(context, log);
  const transfers = new Transfers(controller, log);
  const machines = new MachinesTree(controller, context.extensionUri, transfers, log);
  const agents = new AgentsTree(controller);
  const commands = new CommandsTree(controller);
  const services: Services = { context, controller, machines, agents, commands, transfers, log };

  context.subscriptions.push(
    log,
    controller,
    transfers,
    machines,
    agents,
    commands,
    vscode.window.createTreeView("vmc.machines", { treeDataProvider: machines, dragAndDropController: machines, canSelectMany: true, showCollapseAll: true }),
    vscode.window.createTreeView("vmc.agents", { treeDataProvider: agents, showCollapseAll: true }),
    vscode.window.createTreeView("vmc.commands", { treeDataProvider: commands }),
    vscode.window.createTreeView("vmc.transfers", { treeDataProvider: transfers }),
    vscode.workspace.registerTextDocumentContentProvider(OUTPUT_SCHEME, new CommandOutputProvider(controller, log)),
    ...registerGuestFileSystem(controller),
    ...registerCommands(services),
    ...createStatusBar(controller),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (SERVER_SETTINGS.some((k) => e.affectsConfiguration(k))) void controller?.restart();
    }),
  );
  // Not awaited: the views fill themselves when the server is ready; activation stays fast.
  controller.start().catch((error: Error) => {
    log.error(`the controller did not start: ${error.message}`);
    void vscode.window.showErrorMessage(`VM Controller: the controller did not start: ${error.message}`, "Show Log").then((p) => p && log.show());
  });
}

export async function deactivate(): Promise<void> {
  await controller?.dispose();
  controller = undefined;
}
