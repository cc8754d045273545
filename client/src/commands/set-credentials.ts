import * as vscode from "vscode";
import { storeCredentials } from "../controller/credentials";
import type { VmcCommand } from "./services";

/** Broker login/passcode into SecretStorage (empty login clears them); restarts the controller. */
export const setCredentials: VmcCommand = {
  id: "vmc.broker.setCredentials",
  async run(s) {
    const login = await vscode.window.showInputBox({ title: "Broker credentials", prompt: "Login (empty to forget the stored credentials)", ignoreFocusOut: true });
    if (login === undefined) return;
    if (!login) await storeCredentials(s.context.secrets, undefined);
    else {
      const passcode = await vscode.window.showInputBox({ title: "Broker credentials", prompt: `Passcode for ${login}`, password: true, ignoreFocusOut: true });
      if (passcode === undefined) return;
      await storeCredentials(s.context.secrets, { login, passcode });
    }
    await s.controller.restart();
  },
};
