/**
 * Every message that travels over the STOMP bus, declared once.
 *
 * Each message is a zod schema (validated where it enters a process) and a TypeScript type
 * derived from it. Bodies are JSON (`content-type: application/json`); the `type` field tells
 * messages apart. Payload is always in the body, never in STOMP headers.
 *
 * Destinations:
 * - `/queue/vmc.agent.<agentId>`: one durable inbox per agent (commands wait there while it is away);
 * - `/queue/vmc.controller.<instanceId>`: a controller instance's replies (expires when unused);
 * - `/topic/vmc.presence`: HELLO, HEARTBEAT, BYE from agents;
 * - `/topic/vmc.discover`: DISCOVER from controllers.
 *
 * @packageDocumentation
 */
import { z } from "zod";

/** Version of this message catalogue; agents announce it in HELLO. */
export const BUS_PROTOCOL_VERSION = 1;

/** Dotted agent id such as `vm.1.2.7`: letters, digits, `-`, `_`, separated by dots. */
export const AgentId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "an agent id is dot-separated words of letters, digits, '-' and '_'");
export type AgentId = z.infer<typeof AgentId>;

/** Command id: unique per command and target, chosen by the controller. */
export const CmdId = z.string().min(8).max(128).regex(/^[A-Za-z0-9_.:-]+$/);
export type CmdId = z.infer<typeof CmdId>;

/** Milliseconds since the Unix epoch. */
const Millis = z.number().int().nonnegative();
const Labels = z.record(z.string().max(64), z.string().max(256));

/** Destination names, built in one place. */
export const Destinations = {
  agentInbox: (agentId: string) => `/queue/vmc.agent.${agentId}`,
  controllerInbox: (instanceId: string) => `/queue/vmc.controller.${instanceId}`,
  /**
   * Where a controller instance asks agents to reply (its CMD_RUN `replyTo`). A topic, read
   * through a durable subscription with `x-expires`: on RabbitMQ a SEND to `/queue/X` re-declares
   * X with the sender's headers and closes the sender's connection when they differ, so an
   * expiring reply queue cannot be a `/queue/`; a topic publish never fails. See docs/PROTOCOL.md.
   */
  controllerReplies: (instanceId: string) => `/topic/vmc.controller.${instanceId}`,
  presence: "/topic/vmc.presence",
  discover: "/topic/vmc.discover",
} as const;

/** What an agent can do, announced in HELLO. */
export const Capabilities = z.object({
  exec: z.boolean(),
  stdinStream: z.boolean(),
  transfer: z.boolean(),
});

/** Where the agent's direct data channel listens (file transfer), when it has one. */
export const DataEndpoint = z.object({
  host: z.string().max(255),
  port: z.number().int().min(1).max(65535),
});

/** Agent → `/topic/vmc.presence`: an agent arrived, or answers DISCOVER. */
export const Hello = z.object({
  type: z.literal("HELLO"),
  agentId: AgentId,
  labels: Labels,
  os: z.object({ platform: z.string().max(64), release: z.string().max(128), arch: z.string().max(32), hostname: z.string().max(255) }),
  agentVersion: z.string().max(64),
  protocolVersion: z.number().int(),
  capabilities: Capabilities,
  dataEndpoint: DataEndpoint.optional(),
  /** Random per agent process start; a new value means the agent restarted. */
  bootId: z.string().max(64),
  /** Agent's wall clock when sent. */
  sentAt: Millis,
  /** Period of this agent's HEARTBEATs, ms, so a controller knows from the HELLO when silence means gone. */
  heartbeatMs: z.number().int().positive().optional(),
});
export type Hello = z.infer<typeof Hello>;

/** Agent → `/topic/vmc.presence`: still here (every `intervalMs`). */
export const Heartbeat = z.object({
  type: z.literal("HEARTBEAT"),
  agentId: AgentId,
  bootId: z.string().max(64),
  intervalMs: z.number().int().positive(),
  running: z.number().int().nonnegative(),
  sentAt: Millis,
});
export type Heartbeat = z.infer<typeof Heartbeat>;

/** Agent → `/topic/vmc.presence`: leaving on purpose. */
export const Bye = z.object({
  type: z.literal("BYE"),
  agentId: AgentId,
  bootId: z.string().max(64),
  reason: z.string().max(512).optional(),
});
export type Bye = z.infer<typeof Bye>;

/** Controller → `/topic/vmc.discover`: every agent answers with HELLO at once. */
export const Discover = z.object({
  type: z.literal("DISCOVER"),
  controllerId: z.string().max(128),
  /**
   * Only these agents need answer (a controller checking on the agents a command names). Absent:
   * every agent answers. An agent that ignores this field and answers anyway is harmless.
   */
  agentIds: z.array(AgentId).max(1024).optional(),
});
export type Discover = z.infer<typeof Discover>;

export const PresenceMessage = z.discriminatedUnion("type", [Hello, Heartbeat, Bye]);
export type PresenceMessage = z.infer<typeof PresenceMessage>;

/**
 * Controller → agent inbox: run a command.
 *
 * Signed: `signature` is the controller's Ed25519 signature (base64) over the canonical JSON
 * (see {@link canonicalJson}) of every other field. `agentId` names the one agent this copy is
 * for, so a copy cannot be replayed to another agent; `to` keeps the pattern as asked.
 */
export const CmdRun = z.object({
  type: z.literal("CMD_RUN"),
  cmdId: CmdId,
  agentId: AgentId,
  to: z.string().max(1024),
  argv: z.array(z.string().max(65536)).min(1).max(4096),
  /** Run `argv[0]` through `/bin/sh -c` (argv[1..] become $0, $1, ...). */
  shell: z.boolean().default(false),
  env: z.record(z.string().max(256), z.string().max(65536)).default({}),
  cwd: z.string().max(4096).optional(),
  /** Whole stdin given up front (base64). */
  stdin: z.string().max(16 * 1024 * 1024).optional(),
  /** Stdin arrives as CMD_INPUT messages; stdin stays open until one with `eof`. */
  stdinStream: z.boolean().default(false),
  timeoutMs: z.number().int().positive().max(30 * 24 * 3600 * 1000).optional(),
  /** Stream CMD_OUTPUT while running (the result still carries a bounded tail). */
  stream: z.boolean().default(true),
  /** Bytes of stdout and of stderr kept for CMD_RESULT. */
  tailBytes: z.number().int().nonnegative().max(16 * 1024 * 1024).default(1024 * 1024),
  issuedAt: Millis,
  /** The agent refuses the command after this instant (and says so). */
  expiresAt: Millis,
  /** Where CMD_OUTPUT and CMD_RESULT go. */
  replyTo: z.string().max(512),
  signature: z.string().max(256),
});
export type CmdRun = z.infer<typeof CmdRun>;
export type CmdRunInput = z.input<typeof CmdRun>;

/** Controller → agent inbox: more stdin for a running command (signed like CMD_RUN). */
export const CmdInput = z.object({
  type: z.literal("CMD_INPUT"),
  cmdId: CmdId,
  agentId: AgentId,
  seq: z.number().int().nonnegative(),
  /** base64 */
  data: z.string().max(1024 * 1024),
  eof: z.boolean().default(false),
  issuedAt: Millis,
  signature: z.string().max(256),
});
export type CmdInput = z.infer<typeof CmdInput>;

/** Controller → agent inbox: stop a command (its process group gets SIGTERM, then SIGKILL). */
export const CmdCancel = z.object({
  type: z.literal("CMD_CANCEL"),
  cmdId: CmdId,
  agentId: AgentId,
  issuedAt: Millis,
  signature: z.string().max(256),
});
export type CmdCancel = z.infer<typeof CmdCancel>;

/** Agent → reply-to: a piece of output, in order per stream. */
export const CmdOutput = z.object({
  type: z.literal("CMD_OUTPUT"),
  cmdId: CmdId,
  agentId: AgentId,
  stream: z.enum(["stdout", "stderr"]),
  /** Per-command sequence over both streams, from 0. */
  seq: z.number().int().nonnegative(),
  /** Byte offset of `data` within its stream. */
  offset: z.number().int().nonnegative(),
  /** base64 */
  data: z.string().max(2 * 1024 * 1024),
});
export type CmdOutput = z.infer<typeof CmdOutput>;

/** Resources used by one command's own process tree. */
export const Resources = z.object({
  cpuUserMs: z.number().nonnegative(),
  cpuSystemMs: z.number().nonnegative(),
  peakRssBytes: z.number().int().nonnegative(),
  wallMs: z.number().nonnegative(),
});
export type Resources = z.infer<typeof Resources>;

/**
 * How a command ended, from the agent's side:
 * - `exited`: ran to completion (see `exitCode`) or was killed by a signal (see `signal`);
 * - `timedOut`, `cancelled`: killed by the agent, on timeout or CMD_CANCEL;
 * - `failedToStart`: spawn failed (no such file, bad cwd, ...), see `error`;
 * - `rejected`: never run: bad or missing signature, expired, replayed, invalid; see `error`;
 * - `lost`: the agent restarted while it ran (reported from the journal).
 */
export const CmdStatus = z.enum(["exited", "timedOut", "cancelled", "failedToStart", "rejected", "lost"]);
export type CmdStatus = z.infer<typeof CmdStatus>;

/** A bounded tail of one output stream. */
export const OutputTail = z.object({
  /** base64 of the last bytes of the stream */
  data: z.string(),
  /** total bytes the stream produced */
  totalBytes: z.number().int().nonnegative(),
  /** true when `data` is shorter than the whole stream */
  truncated: z.boolean(),
});
export type OutputTail = z.infer<typeof OutputTail>;

/** Agent → reply-to: the command is over (sent once; re-sent from the journal on redelivery). */
export const CmdResult = z.object({
  type: z.literal("CMD_RESULT"),
  cmdId: CmdId,
  agentId: AgentId,
  status: CmdStatus,
  exitCode: z.number().int().nullable(),
  signal: z.string().max(32).nullable(),
  error: z.string().max(4096).optional(),
  stdout: OutputTail,
  stderr: OutputTail,
  startedAt: Millis.nullable(),
  finishedAt: Millis,
  resources: Resources.nullable(),
  /** True when this result was answered from the journal for a redelivered CMD_RUN. */
  replayed: z.boolean().default(false),
});
export type CmdResult = z.infer<typeof CmdResult>;

/** Everything that may arrive in an agent's inbox. */
export const AgentInboxMessage = z.discriminatedUnion("type", [CmdRun, CmdInput, CmdCancel]);
export type AgentInboxMessage = z.infer<typeof AgentInboxMessage>;

/** Everything that may arrive in a controller's reply queue. */
export const ControllerInboxMessage = z.discriminatedUnion("type", [CmdOutput, CmdResult]);
export type ControllerInboxMessage = z.infer<typeof ControllerInboxMessage>;

/**
 * Canonical JSON used for signatures: object keys sorted, no whitespace, `undefined` dropped.
 * Both ends sign and verify this exact byte string.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** Bytes that a signature covers: the message without its `signature` field. */
export function signedPayload(message: object): string {
  const { signature: _ignored, ...rest } = message as { signature?: unknown };
  return canonicalJson(rest);
}

/* ------------------------------------------------------------------------------------------ *
 * File transfer (see docs/TRANSFER.md). Bulk data travels on the agent's direct data channel
 * (framed binary TCP, protocol/src/transfer.ts); the bus carries only the signed grant that
 * authorises one transfer, a cancel, and, when the data endpoint cannot be reached, the same
 * frames as binary STOMP bodies (`content-length`, headers {@link XferFrameHeaders}).
 * ------------------------------------------------------------------------------------------ */

/** Transfer id: random, chosen by the controller; also names the bus fallback stream. */
export const TransferId = z.string().regex(/^[A-Za-z0-9_-]{16,64}$/, "a transfer id is 16-64 letters, digits, '-' or '_'");
export type TransferId = z.infer<typeof TransferId>;

/**
 * Controller → agent inbox: authorise ONE transfer. Signed like CMD_RUN (Ed25519 over the
 * canonical JSON of every other field). The agent accepts the token once, before `expiresAt`,
 * only for the `agentId` it is, and then does exactly what the grant says: `direction` and
 * `path` cannot be changed by whoever presents the token.
 */
export const XferGrant = z.object({
  type: z.literal("XFER_GRANT"),
  transferId: TransferId,
  agentId: AgentId,
  /** Seen from the controller: `put` writes into the agent, `get` reads from it. */
  direction: z.enum(["put", "get"]),
  /** Agent-side path: the destination (put) or the source (get). */
  path: z.string().min(1).max(4096),
  /** put: the source's base name, used when `path` is an existing directory (cp semantics). */
  sourceName: z.string().max(255).optional(),
  /** get: directories are sent only when true (`cp -r`). */
  recursive: z.boolean().default(false),
  /** Continue files from their last verified offset instead of starting over. */
  resume: z.boolean().default(false),
  /** Keep partial files (resumable) when the transfer fails or is cancelled. */
  keepPartial: z.boolean().default(false),
  /** Bytes per data frame. */
  chunkSize: z.number().int().min(4096).max(8 * 1024 * 1024),
  /** base64url of 32 random bytes; the peer presents it once on the data channel. */
  token: z.string().min(32).max(64),
  /** `direct`: the controller will dial the data endpoint; `bus`: frames travel over the bus. */
  channel: z.enum(["direct", "bus"]),
  /** Where the agent sends bus frames (channel `bus`). */
  replyTo: z.string().max(512),
  issuedAt: Millis,
  expiresAt: Millis,
  signature: z.string().max(256),
});
export type XferGrant = z.infer<typeof XferGrant>;
export type XferGrantInput = z.input<typeof XferGrant>;

/** Controller → agent inbox: abandon a transfer (signed). */
export const XferCancel = z.object({
  type: z.literal("XFER_CANCEL"),
  transferId: TransferId,
  agentId: AgentId,
  issuedAt: Millis,
  signature: z.string().max(256),
});
export type XferCancel = z.infer<typeof XferCancel>;

/** JSON transfer messages that may arrive in an agent's inbox (route `XFER_*` types to the transfer module). */
export const TransferInboxMessage = z.discriminatedUnion("type", [XferGrant, XferCancel]);
export type TransferInboxMessage = z.infer<typeof TransferInboxMessage>;

/**
 * Headers of a bus-fallback frame: a STOMP message whose binary body (with `content-length`)
 * is one data-channel frame without its length prefix (type byte + payload). Sent to the agent
 * inbox (controller → agent) or to the grant's `replyTo` (agent → controller).
 */
export const XferFrameHeaders = {
  /** Marks the message as a transfer frame; value {@link XFER_FRAME_TYPE}. */
  type: "vmc-type",
  /** The transfer id. */
  transfer: "vmc-xfer",
  /** Per-direction sequence number from 0, so a receiver notices loss or reordering. */
  seq: "vmc-seq",
} as const;
export const XFER_FRAME_TYPE = "XFER_FRAME";
