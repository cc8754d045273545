/**
 * The controller API (JSON-RPC 2.0), declared once for both endpoints: `vmc serve --stdio`
 * (the editor, through vscode-languageclient) and `vmc rpc` (the BOINC wrapper, LSP or
 * newline-delimited framing). Call sites never spell a method name: they use `X.type` from a
 * namespace here, and servers validate params with `X.params` (a zod schema), so an invalid
 * request is answered with -32602 naming the field and the reason.
 *
 * Binary data (command output, stdin) travels as base64 strings. Times are milliseconds since
 * the epoch. Every method and notification is documented with examples in docs/PROTOCOL.md.
 * @packageDocumentation
 */
import { NotificationType, RequestType } from "vscode-jsonrpc";
import { z } from "zod";
import type { Resources } from "./bus";
import { DriverName, VmName, VmState } from "./vm";

/** Version of this catalogue; the handshake reports it. Additive changes do not bump it. */
export const RPC_PROTOCOL_VERSION = 1;

const NoParams = z.object({}).strict().optional();
const SnapshotName = z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/, "a snapshot name is letters, digits, '.', '-' and '_'");
const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "must be base64");
const CommandId = z.string().min(1).max(64);
const ProgressToken = z.union([z.string().max(256), z.number().int()]);

// ───────────────────────────── handshake ─────────────────────────────

/** What a driver can do; callers branch on this, never on the driver's name. */
export interface DriverFeatures {
  pause: boolean;
  snapshots: boolean;
  /** Snapshots include memory, so a restored VM continues exactly where it was. */
  snapshotsWithMemory: boolean;
  /** Can start new VMs from a saved, agent-ready template. */
  templates: boolean;
  /** `stop` asks the guest first (ACPI power button) before forcing. */
  gracefulStop: boolean;
  /** Whether the guest is isolated from the host like a VM ("vm") or not at all ("none"). */
  isolation: "vm" | "none";
}

export interface DriverInfo {
  name: DriverName;
  /** The hypervisor is installed and usable here. */
  available: boolean;
  features: DriverFeatures;
}

/** What `vmc.handshake` returns. */
export interface Handshake {
  serverVersion: string;
  protocolVersion: number;
  drivers: DriverInfo[];
  /** The driver `vm.create` uses when none is named. */
  defaultDriver: DriverName;
  /** Broker URL in use (credentials removed). */
  broker: string;
  /** Whether the bus connection is up right now. */
  brokerConnected: boolean;
  /** $VMC_HOME of this controller. */
  home: string;
}

export namespace HandshakeRequest {
  export const method = "vmc.handshake" as const;
  export const params = z.object({ client: z.string().max(200).optional() }).strict().optional();
  export const type = new RequestType<z.infer<typeof params>, Handshake, void>(method);
}

/** Sent when the bus connection goes up or down. */
export namespace BrokerStateNotification {
  export const method = "broker.state" as const;
  export const type = new NotificationType<{ connected: boolean; broker: string; reason?: string }>(method);
}

// ───────────────────────────── VMs ─────────────────────────────

/** One VM as the API reports it. */
export interface VmInfo {
  name: string;
  driver: DriverName;
  state: VmState;
  /** Why the state is what it is when not obvious (error, forced stop). */
  reason?: string;
  agentId: string;
  memoryMiB?: number;
  cpus?: number;
  /** `kvm`, `tcg`, `process`... when running. */
  accel?: string;
  /** The guest's agent is online on the bus. */
  agentOnline: boolean;
}

export interface SnapshotInfo {
  name: string;
  createdAt: number;
  withMemory: boolean;
  vmStateBytes?: number;
}

const VmRef = z.object({ name: VmName }).strict();

export namespace VmListRequest {
  export const method = "vm.list" as const;
  export const params = NoParams;
  export const type = new RequestType<z.infer<typeof params>, VmInfo[], void>(method);
}

export namespace VmCreateRequest {
  export const method = "vm.create" as const;
  export const params = z
    .object({
      name: VmName,
      /** Default: the handshake's `defaultDriver`. */
      driver: DriverName.optional(),
      memoryMiB: z.number().int().min(64).max(65536).optional(),
      cpus: z.number().int().min(1).max(64).optional(),
      /** Agent id the guest announces (default: the VM name). */
      agentId: z.string().min(1).max(128).optional(),
      /** A built guest image directory (default: the cached image, built when missing). */
      image: z.string().min(1).max(4096).optional(),
      /** Use a saved agent-ready template when the driver has one (default true). */
      fromTemplate: z.boolean().optional(),
      /** Start it after creating (default false). */
      start: z.boolean().optional(),
      /** `$/progress` token for image builds and boots. */
      workDoneToken: ProgressToken.optional(),
    })
    .strict();
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace VmStartRequest {
  export const method = "vm.start" as const;
  export const params = z
    .object({
      name: VmName,
      /** Also wait until the guest's agent is online (default false). */
      waitForAgent: z.boolean().optional(),
      /** Bound for `waitForAgent` (default 60 000). */
      agentTimeoutMs: z.number().int().positive().max(3_600_000).optional(),
    })
    .strict();
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace VmStopRequest {
  export const method = "vm.stop" as const;
  export const params = z
    .object({ name: VmName, timeoutMs: z.number().int().nonnegative().max(3_600_000).optional(), force: z.boolean().optional() })
    .strict();
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace VmPauseRequest {
  export const method = "vm.pause" as const;
  export const params = VmRef;
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace VmResumeRequest {
  export const method = "vm.resume" as const;
  export const params = VmRef;
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace VmDeleteRequest {
  export const method = "vm.delete" as const;
  export const params = z.object({ name: VmName, force: z.boolean().optional() }).strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export namespace SnapshotTakeRequest {
  export const method = "vm.snapshot.take" as const;
  export const params = z.object({ name: VmName, snapshot: SnapshotName }).strict();
  export const type = new RequestType<z.infer<typeof params>, SnapshotInfo, void>(method);
}

export namespace SnapshotRestoreRequest {
  export const method = "vm.snapshot.restore" as const;
  export const params = z.object({ name: VmName, snapshot: SnapshotName }).strict();
  /** The VM after the restore; commands rolled back by it end with status `rolledBack`. */
  export const type = new RequestType<z.infer<typeof params>, VmInfo, void>(method);
}

export namespace SnapshotListRequest {
  export const method = "vm.snapshot.list" as const;
  export const params = VmRef;
  export const type = new RequestType<z.infer<typeof params>, SnapshotInfo[], void>(method);
}

export namespace SnapshotDeleteRequest {
  export const method = "vm.snapshot.delete" as const;
  export const params = z.object({ name: VmName, snapshot: SnapshotName }).strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export interface VmStateChange {
  name: string;
  state: VmState;
  previous: VmState | null;
  /** The hypervisor's event (`STOP`, `RESUME`, `SHUTDOWN`, `exit`, `created`, `deleted`...). */
  cause: string;
  at: number;
}

/** A VM changed state (also sent for `created` and `deleted`, with `state: "stopped"`). */
export namespace VmStateChangedNotification {
  export const method = "vm.stateChanged" as const;
  export const type = new NotificationType<VmStateChange>(method);
}

// ───────────────────────────── agents ─────────────────────────────

/** One agent as the API reports it. */
export interface AgentInfo {
  agentId: string;
  labels: Record<string, string>;
  online: boolean;
  /** Last presence message (ms since epoch). */
  lastSeen: number;
  /** Name of the VM whose guest this agent is, when it is one of ours. */
  vm?: string;
  os?: string;
  agentVersion?: string;
  /** Commands it said it was running in its last heartbeat. */
  running: number;
  offlineReason?: string;
}

export namespace AgentListRequest {
  export const method = "agent.list" as const;
  export const params = z
    .object({
      /** Ask agents to announce themselves first (default false: the registry as it is). */
      discover: z.boolean().optional(),
      /** Only agents matching this target expression (as in `cmd.run`). */
      target: z.string().min(1).max(4096).optional(),
    })
    .strict()
    .optional();
  export const type = new RequestType<z.infer<typeof params>, AgentInfo[], void>(method);
}

/** An agent appeared, changed, went offline or was removed (`removed: true`). */
export namespace AgentChangedNotification {
  export const method = "agent.changed" as const;
  export const type = new NotificationType<AgentInfo & { removed?: boolean }>(method);
}

// ───────────────────────────── commands ─────────────────────────────

/**
 * How one target of a command ended, or `running`/`pending` while it has not.
 * `rolledBack`: the VM was restored to a snapshot taken before the command was sent.
 */
export type CommandTargetStatus = "pending" | "running" | "succeeded" | "failed" | "timedOut" | "cancelled" | "unreachable" | "rolledBack";

export interface OutputTailInfo {
  /** base64 of the last bytes of the stream. */
  data: string;
  totalBytes: number;
  truncated: boolean;
}

export interface CommandTarget {
  agentId: string;
  status: CommandTargetStatus;
  exitCode: number | null;
  signal: string | null;
  reason?: string;
  stdout: OutputTailInfo;
  stderr: OutputTailInfo;
  /** CPU and peak memory of the command's own process tree (the same record as `vmc run --json`). */
  resources: Resources | null;
  startedAt: number | null;
  finishedAt: number | null;
}

/** A command as `cmd.get` returns it; kept in $VMC_HOME until it expires by policy. */
export interface CommandRecord {
  id: string;
  target: string;
  argv: string[];
  shell: boolean;
  cwd?: string;
  state: "running" | "finished";
  submittedAt: number;
  finishedAt: number | null;
  /** One entry per agent the target expanded to, sorted by agent id. */
  targets: CommandTarget[];
  /** True when finished and every target succeeded. */
  ok: boolean;
}

/** `cmd.list` entries: a record without the output tails. */
export type CommandSummary = Omit<CommandRecord, "targets"> & {
  targets: Array<Pick<CommandTarget, "agentId" | "status" | "exitCode" | "signal">>;
};

export namespace CmdRunRequest {
  export const method = "cmd.run" as const;
  export const params = z
    .object({
      /** Target expression: id globs, comma lists, label selectors (`vm.1.*`, `a,b`, `role=worker`), or a VM name. */
      target: z.string().min(1).max(4096),
      argv: z.array(z.string().max(131072)).min(1).max(4096),
      shell: z.boolean().optional(),
      env: z.record(z.string().max(256), z.string().max(131072)).optional(),
      cwd: z.string().max(4096).optional(),
      /** Whole stdin up front (base64). */
      stdin: Base64.max(64 * 1024 * 1024).optional(),
      /** Keep stdin open for `cmd.input` (default false). */
      interactive: z.boolean().optional(),
      /** Counted while the VM runs, not while it is paused. */
      timeoutMs: z.number().int().positive().max(30 * 86_400_000).optional(),
      /** How long the command may wait for an offline agent (default 30 000). */
      expiresInMs: z.number().int().positive().max(7 * 86_400_000).optional(),
      /** Send `cmd.output` notifications (default true). */
      stream: z.boolean().optional(),
      /**
       * false (default): answer with the record at once (state `running`), then `cmd.finished`.
       * true: answer with the finished record; `$/cancelRequest` on it cancels the command.
       */
      wait: z.boolean().optional(),
    })
    .strict();
  export const type = new RequestType<z.infer<typeof params>, CommandRecord, void>(method);
}

export namespace CmdInputRequest {
  export const method = "cmd.input" as const;
  export const params = z
    .object({
      id: CommandId,
      /** Default: every target of the command. */
      agentId: z.string().min(1).max(128).optional(),
      data: Base64.max(1024 * 1024).optional(),
      /** Close the command's stdin after `data`. */
      eof: z.boolean().optional(),
    })
    .strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export namespace CmdCancelRequest {
  export const method = "cmd.cancel" as const;
  export const params = z.object({ id: CommandId }).strict();
  /** Answers once every target has ended. */
  export const type = new RequestType<z.infer<typeof params>, CommandRecord, void>(method);
}

export namespace CmdListRequest {
  export const method = "cmd.list" as const;
  export const params = z
    .object({ state: z.enum(["running", "finished"]).optional(), limit: z.number().int().positive().max(10_000).optional() })
    .strict()
    .optional();
  /** Newest first. */
  export const type = new RequestType<z.infer<typeof params>, CommandSummary[], void>(method);
}

export namespace CmdGetRequest {
  export const method = "cmd.get" as const;
  export const params = z.object({ id: CommandId }).strict();
  export const type = new RequestType<z.infer<typeof params>, CommandRecord, void>(method);
}

export interface CommandOutputEvent {
  id: string;
  agentId: string;
  stream: "stdout" | "stderr";
  /** Byte offset of `data` in the stream. */
  offset: number;
  /** base64 */
  data: string;
}

export namespace CmdStartedNotification {
  export const method = "cmd.started" as const;
  export const type = new NotificationType<CommandRecord>(method);
}

export namespace CmdOutputNotification {
  export const method = "cmd.output" as const;
  export const type = new NotificationType<CommandOutputEvent>(method);
}

export namespace CmdFinishedNotification {
  export const method = "cmd.finished" as const;
  export const type = new NotificationType<CommandRecord>(method);
}

// ───────────────────────────── files ─────────────────────────────

const RemotePathSchema = z.object({ target: z.string().min(1).max(128), path: z.string().min(1).max(4096) }).strict();
/** An agent-side location as `vmc cp` writes it: `NAME:/path` (NAME = agent id or VM name). */
export type RemotePath = z.infer<typeof RemotePathSchema>;

const TransferOptions = {
  /** Copy directories recursively (`cp -r`). */
  recursive: z.boolean().optional(),
  /** Continue from partial files left by an earlier interrupted transfer. */
  resume: z.boolean().optional(),
  /** Keep partial files (for a later `resume`) when the transfer fails or is cancelled. */
  keepPartial: z.boolean().optional(),
  /** `auto` (default): direct data channel, else the bus; or force one. `ssh` for agentless machines. */
  channel: z.enum(["auto", "direct", "bus", "ssh"]).optional(),
  /** Progress token: when set, the server sends `$/progress` notifications with it. */
  workDoneToken: ProgressToken.optional(),
};

/** `file.put`: host paths → an agent's path. */
export namespace FilePutRequest {
  export const method = "file.put" as const;
  export const params = z.object({ sources: z.array(z.string().min(1).max(4096)).min(1).max(10_000), destination: RemotePathSchema, ...TransferOptions }).strict();
  export const type = new RequestType<z.infer<typeof params>, FileTransferResult, void>(method);
}
export type FilePutParams = z.infer<typeof FilePutRequest.params>;

/** `file.get`: an agent's paths → a host path (an existing directory receives them by name). */
export namespace FileGetRequest {
  export const method = "file.get" as const;
  export const params = z.object({ sources: z.array(RemotePathSchema).min(1).max(10_000), destination: z.string().min(1).max(4096), ...TransferOptions }).strict();
  export const type = new RequestType<z.infer<typeof params>, FileTransferResult, void>(method);
}
export type FileGetParams = z.infer<typeof FileGetRequest.params>;
export type FileTransferOptions = Omit<FilePutParams, "sources" | "destination">;

/** What one finished transfer reports. */
export interface FileTransferResult {
  /** Files, directories and symlinks written. */
  entries: number;
  files: number;
  bytes: number;
  /** Bytes actually moved (less than `bytes` when resumed or sparse). */
  bytesSent: number;
  channel: "direct" | "bus" | "ssh";
  elapsedMs: number;
}

// ─────────────── guest file system (the editor's `vmc:` scheme) ───────────────

export interface GuestFileStat {
  type: "file" | "directory" | "symlink" | "other";
  size: number;
  /** Modification time, ms since epoch. */
  mtime: number;
  /** POSIX permission bits. */
  mode: number;
}

const GuestPath = z.object({ target: z.string().min(1).max(128), path: z.string().min(1).max(4096).startsWith("/", "a guest path is absolute") }).strict();

export namespace FsStatRequest {
  export const method = "fs.stat" as const;
  export const params = GuestPath;
  /** Error UnknownPath (-33012) when nothing is there. */
  export const type = new RequestType<z.infer<typeof params>, GuestFileStat, void>(method);
}

export namespace FsReadDirRequest {
  export const method = "fs.readDir" as const;
  export const params = GuestPath;
  export const type = new RequestType<z.infer<typeof params>, Array<{ name: string; type: GuestFileStat["type"] }>, void>(method);
}

export namespace FsReadFileRequest {
  export const method = "fs.readFile" as const;
  export const params = GuestPath.extend({ maxBytes: z.number().int().positive().max(64 * 1024 * 1024).optional() }).strict();
  /** base64 content; error TooLarge (-33013) above `maxBytes` (default 16 MiB). */
  export const type = new RequestType<z.infer<typeof params>, { data: string; size: number }, void>(method);
}

export namespace FsWriteFileRequest {
  export const method = "fs.writeFile" as const;
  export const params = GuestPath.extend({ data: Base64.max(90 * 1024 * 1024), create: z.boolean().optional(), overwrite: z.boolean().optional() }).strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export namespace FsMkdirRequest {
  export const method = "fs.mkdir" as const;
  export const params = GuestPath;
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export namespace FsDeleteRequest {
  export const method = "fs.delete" as const;
  export const params = GuestPath.extend({ recursive: z.boolean().optional() }).strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

export namespace FsRenameRequest {
  export const method = "fs.rename" as const;
  export const params = z.object({ target: z.string().min(1).max(128), from: z.string().min(1).max(4096), to: z.string().min(1).max(4096), overwrite: z.boolean().optional() }).strict();
  export const type = new RequestType<z.infer<typeof params>, null, void>(method);
}

// ───────────────────────────── progress ─────────────────────────────

/** `$/progress` value (LSP's work-done progress shape). */
export interface TransferProgressValue {
  kind: "begin" | "report" | "end";
  /** Title on `begin`; relative path being moved on `report`. */
  title?: string;
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
