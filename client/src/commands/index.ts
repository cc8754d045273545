import type * as vscode from "vscode";
import { addMachineToWorkspace } from "./add-machine-to-workspace";
import { cancelCommand } from "./cancel-command";
import { cancelTransfer } from "./cancel-transfer";
import { createMachine } from "./create-machine";
import { deleteMachine } from "./delete-machine";
import { deleteSnapshot } from "./delete-snapshot";
import { download } from "./download";
import { openGuestFile } from "./open-guest-file";
import { openTerminal } from "./open-terminal";
import { pauseMachine } from "./pause-machine";
import { refresh } from "./refresh";
import { restartServer } from "./restart-server";
import { restoreSnapshot } from "./restore-snapshot";
import { resumeMachine } from "./resume-machine";
import { runCommand } from "./run-command";
import { register, type Services, type VmcCommand } from "./services";
import { setCredentials } from "./set-credentials";
import { showCommandOutput } from "./show-command-output";
import { showLog } from "./show-log";
import { startMachine } from "./start-machine";
import { stopMachine } from "./stop-machine";
import { takeSnapshot } from "./take-snapshot";
import { upload } from "./upload";

/** Every command the extension contributes (package.json `contributes.commands` lists the same ids). */
export const ALL_COMMANDS: readonly VmcCommand[] = [
  createMachine,
  startMachine,
  stopMachine,
  pauseMachine,
  resumeMachine,
  deleteMachine,
  takeSnapshot,
  restoreSnapshot,
  deleteSnapshot,
  openTerminal,
  upload,
  download,
  addMachineToWorkspace,
  runCommand,
  showCommandOutput,
  cancelCommand,
  cancelTransfer,
  openGuestFile,
  refresh,
  restartServer,
  setCredentials,
  showLog,
];

export function registerCommands(services: Services): vscode.Disposable[] {
  return ALL_COMMANDS.map((c) => register(services, c));
}
