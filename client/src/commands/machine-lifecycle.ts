import type { VmInfo } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { machineOf, type MachineNode } from "../views/machines/nodes";
import { machineArg, type Services } from "./services";

/**
 * Shared by the start/stop/pause/resume commands: the request with progress, its answer shown at
 * once. From a multi-selection (`(node, nodes)`) it acts on every selected machine.
 */
export async function lifecycle(
  s: Services,
  arg: unknown,
  selection: unknown,
  states: readonly string[],
  verb: string,
  request: (name: string) => Promise<VmInfo>,
): Promise<VmInfo | undefined> {
  const selected = Array.isArray(selection) ? [...new Set((selection as MachineNode[]).map(machineOf).filter((n): n is string => !!n))] : [];
  const names = selected.length > 1 ? selected : [await machineArg(s, arg, states)].filter((n): n is string => !!n);
  let last: VmInfo | undefined;
  await Promise.all(
    names.map(async (name) => {
      const vm = await vscode.window.withProgress({ location: { viewId: "vmc.machines" }, title: `${verb} ${name}` }, () => request(name));
      s.machines.update(vm);
      last = vm;
    }),
  );
  return last;
}
