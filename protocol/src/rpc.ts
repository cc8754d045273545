/**
 * The controller API (JSON-RPC 2.0), declared once for both endpoints: `vmc serve --stdio`
 * (the editor, through vscode-languageclient) and `vmc rpc` (the BOINC wrapper). Call sites
 * never spell a method name: they use `X.type` from a namespace here.
 *
 * This is the catalogue's skeleton; the controller-API issue fills in params and results.
 * @packageDocumentation
 */
import { NotificationType, RequestType } from "vscode-jsonrpc";
import type { AgentId, Hello } from "./bus";
import type { DriverName, VmState } from "./vm";

/** What `initialize`/`vmc.handshake` returns. */
export interface Handshake {
  serverVersion: string;
  drivers: DriverName[];
  broker: string;
}

/** One VM as the API reports it. */
export interface VmInfo {
  name: string;
  driver: DriverName;
  state: VmState;
  agentId: AgentId;
}

/** One agent as the API reports it. */
export interface AgentInfo {
  agentId: AgentId;
  labels: Hello["labels"];
  online: boolean;
  lastSeen: number;
}

export namespace HandshakeRequest {
  export const method = "vmc.handshake" as const;
  export const type = new RequestType<Record<string, never>, Handshake, void>(method);
}

export namespace VmListRequest {
  export const method = "vm.list" as const;
  export const type = new RequestType<Record<string, never>, VmInfo[], void>(method);
}

export namespace AgentListRequest {
  export const method = "agent.list" as const;
  export const type = new RequestType<Record<string, never>, AgentInfo[], void>(method);
}

export namespace VmStateChangedNotification {
  export const method = "vm.stateChanged" as const;
  export const type = new NotificationType<{ name: string; state: VmState; previous: VmState }>(method);
}

export namespace AgentChangedNotification {
  export const method = "agent.changed" as const;
  export const type = new NotificationType<AgentInfo>(method);
}
