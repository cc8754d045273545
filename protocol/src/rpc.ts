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

/** An agent-side location as `vmc cp` writes it: `NAME:/path` (NAME = agent id or VM name). */
export interface RemotePath {
  /** Agent id (a VM named N has agent id N unless told otherwise). */
  target: string;
  path: string;
}

/** Options shared by `file.put` and `file.get`. */
export interface FileTransferOptions {
  /** Copy directories recursively (`cp -r`). */
  recursive?: boolean;
  /** Continue from partial files left by an earlier interrupted transfer. */
  resume?: boolean;
  /** Keep partial files (for a later `resume`) when the transfer fails or is cancelled. */
  keepPartial?: boolean;
  /** `auto` (default): direct data channel, else the bus; or force one. `ssh` for agentless machines. */
  channel?: "auto" | "direct" | "bus" | "ssh";
  /** Progress token: when set, the server sends `$/progress` notifications with it. */
  workDoneToken?: string | number;
}

/** `file.put`: host paths → an agent's path. */
export interface FilePutParams extends FileTransferOptions {
  /** Host paths (files, or directories with `recursive`). */
  sources: string[];
  destination: RemotePath;
}

/** `file.get`: an agent's paths → a host path. */
export interface FileGetParams extends FileTransferOptions {
  sources: RemotePath[];
  /** Host path: an existing directory receives the sources by name; else the single source is renamed to it. */
  destination: string;
}

/** What one finished transfer reports. */
export interface FileTransferResult {
  /** Files, directories and symlinks written. */
  entries: number;
  files: number;
  bytes: number;
  /** Bytes actually moved (less than `bytes` when resumed or sparse). */
  bytesSent: number;
  /** Channel used: `direct`, `bus` or `ssh`. */
  channel: "direct" | "bus" | "ssh";
  elapsedMs: number;
}

export namespace FilePutRequest {
  export const method = "file.put" as const;
  export const type = new RequestType<FilePutParams, FileTransferResult, void>(method);
}

export namespace FileGetRequest {
  export const method = "file.get" as const;
  export const type = new RequestType<FileGetParams, FileTransferResult, void>(method);
}

/** `$/progress` value for a transfer (LSP's work-done progress shape, `kind: "report"`). */
export interface TransferProgressValue {
  kind: "begin" | "report" | "end";
  /** Relative path being moved. */
  message?: string;
  /** 0..100 */
  percentage?: number;
  bytesDone: number;
  bytesTotal: number;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Estimated milliseconds left, or null when unknown. */
  etaMs: number | null;
}

export interface ProgressParams<T> {
  token: string | number;
  value: T;
}

export namespace ProgressNotification {
  export const method = "$/progress" as const;
  export const type = new NotificationType<ProgressParams<TransferProgressValue>>(method);
}
