import { ResponseError } from "vscode-languageclient/node";
import * as vscode from "vscode";
import type { Controller } from "../controller/controller";
import type { AgentsTree } from "../views/agents/agents-tree";
import type { CommandsTree } from "../views/commands/commands-tree";
import type { MachinesTree } from "../views/machines/machines-tree";
import { machineOf, type MachineNode } from "../views/machines/nodes";
import type { Transfers } from "../views/transfers/transfers";

/** What every command can use. */
export interface Services {
  context: vscode.ExtensionContext;
  controller: Controller;
  machines: MachinesTree;
  agents: AgentsTree;
  commands: CommandsTree;
  transfers: Transfers;
  log: vscode.LogOutputChannel;
}

/** A palette/context-menu command: the same function serves both (`args` = the tree row, if any). */
export interface VmcCommand {
  id: string;
  run(services: Services, ...args: unknown[]): Promise<unknown>;
}

/**
 * The machine a command is about: a Machines row, a machine name (tests and keybindings pass
 * one), else one picked from the list (optionally only those in the given states).
 */
export async function machineArg(s: Services, arg: unknown, states?: readonly string[]): Promise<string | undefined> {
  if (typeof arg === "string" && arg) return arg;
  if (arg && typeof arg === "object" && "kind" in arg) {
    const name = machineOf(arg as MachineNode);
    if (name) return name;
  }
  await s.controller.ready();
  if (!s.machines.machines().length) await s.machines.reload();
  const candidates = s.machines.machines().filter((vm) => !states || states.includes(vm.state));
  if (!candidates.length) {
    void vscode.window.showInformationMessage(states ? `No machine is ${states.join(" or ")}.` : "There are no machines yet.");
    return undefined;
  }
  const pick = await vscode.window.showQuickPick(
    candidates.map((vm) => ({ label: vm.name, description: `${vm.state} · ${vm.driver}` })),
    { placeHolder: "Machine" },
  );
  return pick?.label;
}

/** Runs a command with its errors reported once, here (server errors carry their message). */
export function register(s: Services, command: VmcCommand): vscode.Disposable {
  return vscode.commands.registerCommand(command.id, async (...args: unknown[]) => {
    try {
      return await command.run(s, ...args);
    } catch (error) {
      const message = error instanceof ResponseError ? error.message : (error as Error)?.message ?? String(error);
      s.log.error(`${command.id}: ${message}`);
      void vscode.window.showErrorMessage(message);
      return undefined;
    }
  });
}
