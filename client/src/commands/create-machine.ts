import { VmCreateRequest, type DriverInfo } from "@vmc/protocol/rpc";
import type { DriverName } from "@vmc/protocol/vm";
import * as vscode from "vscode";
import type { z } from "zod";
import type { VmcCommand } from "./services";

type CreateParams = z.infer<typeof VmCreateRequest.params>;

const NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/**
 * "Create Machine…": name → driver → memory → CPUs → start now?, each step with Back; or
 * `(options)` with the `vm.create` params to skip the questions.
 */
export const createMachine: VmcCommand = {
  id: "vmc.machine.create",
  async run(s, given) {
    const handshake = await s.controller.ready();
    const imageDir = vscode.workspace.getConfiguration("vmc").get<string>("imageDir", "").trim();
    let params: CreateParams;
    if (given && typeof given === "object") params = given as typeof params;
    else {
      const answers = await askSteps(handshake.drivers, handshake.defaultDriver, s.machines.machines().map((m) => m.name));
      if (!answers) return;
      params = answers;
    }
    if (imageDir && !params.image && params.driver !== "process") params = { ...params, image: imageDir };
    const vm = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Creating machine ${params.name}`, cancellable: false }, (progress) => {
      const token = `vmc-create-${params.name}-${Date.now()}`;
      const sub = s.controller.onProgress<{ message?: string; title?: string }>(token, (v) => progress.report({ message: v.message ?? v.title }));
      return s.controller.request(VmCreateRequest.type, { ...params, workDoneToken: token }).finally(() => sub.dispose());
    });
    s.machines.update(vm);
    return vm;
  },
};

type Answers = { name: string; driver: DriverName; memoryMiB?: number; cpus?: number; start: boolean };

async function askSteps(drivers: DriverInfo[], defaultDriver: DriverName, taken: string[]): Promise<Answers | undefined> {
  const a: Partial<Answers> = {};
  const steps = 5;
  let step = 1;
  while (step <= steps) {
    let result: unknown;
    switch (step) {
      case 1:
        result = await input(step, steps, "Machine name", a.name ?? "", (v) => (!NAME.test(v) ? "dot-separated words of letters, digits, '-' and '_'" : taken.includes(v) ? `${v} exists` : undefined), false);
        if (typeof result === "string") a.name = result;
        break;
      case 2:
        result = await pick(
          step,
          steps,
          "Driver",
          drivers.map((d) => ({ label: d.name, description: `${d.available ? "" : "not available · "}${d.name === defaultDriver ? "default" : ""}`, detail: `isolation: ${d.features.isolation}${d.features.snapshots ? " · snapshots" : ""}${d.features.pause ? " · pause" : ""}` })),
        );
        if (typeof result === "string") a.driver = result as DriverName;
        break;
      case 3:
        result = await input(step, steps, "Memory (MiB)", String(a.memoryMiB ?? 512), (v) => (/^\d+$/.test(v) && +v >= 64 && +v <= 65536 ? undefined : "64 to 65536"));
        if (typeof result === "string") a.memoryMiB = Number(result);
        break;
      case 4:
        result = await input(step, steps, "CPUs", String(a.cpus ?? 1), (v) => (/^\d+$/.test(v) && +v >= 1 && +v <= 64 ? undefined : "1 to 64"));
        if (typeof result === "string") a.cpus = Number(result);
        break;
      case 5:
        result = await pick(step, steps, "Start it now?", [{ label: "Start" }, { label: "Leave stopped" }]);
        if (typeof result === "string") a.start = result === "Start";
        break;
    }
    if (result === BACK) step = Math.max(1, step - 1);
    else if (result === undefined) return undefined;
    else step++;
  }
  return a as Answers;
}

const BACK = Symbol("back");

function input(step: number, total: number, title: string, value: string, validate: (v: string) => string | undefined, back = true): Promise<string | typeof BACK | undefined> {
  return new Promise((resolve) => {
    const box = vscode.window.createInputBox();
    box.title = `Create Machine: ${title}`;
    box.step = step;
    box.totalSteps = total;
    box.value = value;
    box.ignoreFocusOut = true;
    if (back) box.buttons = [vscode.QuickInputButtons.Back];
    box.onDidChangeValue((v) => (box.validationMessage = validate(v)));
    box.onDidTriggerButton(() => {
      resolve(BACK);
      box.dispose();
    });
    box.onDidAccept(() => {
      const problem = validate(box.value);
      if (problem) {
        box.validationMessage = problem;
        return;
      }
      resolve(box.value);
      box.dispose();
    });
    box.onDidHide(() => {
      resolve(undefined);
      box.dispose();
    });
    box.show();
  });
}

function pick(step: number, total: number, title: string, items: vscode.QuickPickItem[]): Promise<string | typeof BACK | undefined> {
  return new Promise((resolve) => {
    const qp = vscode.window.createQuickPick();
    qp.title = `Create Machine: ${title}`;
    qp.step = step;
    qp.totalSteps = total;
    qp.items = items;
    qp.ignoreFocusOut = true;
    qp.buttons = [vscode.QuickInputButtons.Back];
    qp.onDidTriggerButton(() => {
      resolve(BACK);
      qp.dispose();
    });
    qp.onDidAccept(() => {
      resolve(qp.selectedItems[0]?.label);
      qp.dispose();
    });
    qp.onDidHide(() => {
      resolve(undefined);
      qp.dispose();
    });
    qp.show();
  });
}
