import type { VmInfo } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { machineArg, type Services } from "./services";

/** Shared by the start/stop/pause/resume commands: a request with progress, the answer shown at once. */
export async function lifecycle(
  s: Services,
  arg: unknown,
  states: readonly string[],
  verb: string,
  request: (name: string) => Promise<VmInfo>,
): Promise<VmInfo | undefined> {
  const name = await machineArg(s, arg, states);
  if (!name) return undefined;
  const vm = await vscode.window.withProgress({ location: { viewId: "vmc.machines" }, title: `${verb} ${name}` }, () => request(name));
  s.machines.update(vm);
  return vm;
}
