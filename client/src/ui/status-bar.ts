import { BrokerStateNotification } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import type { Controller } from "../controller/controller";

/** The broker connection as the controller sees it: from the handshake, then `broker.state`. */
export function createStatusBar(controller: Controller): vscode.Disposable[] {
  const item = vscode.window.createStatusBarItem("vmc.status", vscode.StatusBarAlignment.Left, 10);
  item.name = "VM Controller";
  item.command = "vmc.showLog";
  const show = (text: string, tooltip: string, warn: boolean) => {
    item.text = `$(vm) VMC: ${text}`;
    item.tooltip = tooltip;
    item.accessibilityInformation = { label: `VM Controller ${text}` };
    item.backgroundColor = warn ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
    item.show();
  };
  show("starting", "Starting the controller", false);
  return [
    item,
    controller.onDidChangeState((state) => {
      if (state === "starting") show("starting", "Starting the controller", false);
      if (state === "stopped") show("stopped", "The controller is not running (click for the log)", true);
    }),
    controller.onDidBecomeReady((h) => show(h.brokerConnected ? "connected" : "disconnected", `Broker ${h.broker} · $VMC_HOME ${h.home}`, !h.brokerConnected)),
    controller.onNotification(BrokerStateNotification.type, (s) =>
      show(s.connected ? "connected" : "disconnected", `Broker ${s.broker}${s.reason ? ` · ${s.reason}` : ""}`, !s.connected),
    ),
  ];
}
