/**
 * How an optional part of the agent (the file-transfer data channel) mounts itself: it is
 * started with the agent's identity, bus and key, may announce capabilities and a data endpoint
 * in HELLO, and receives every inbox message that is not a CMD_* message.
 */
import type { KeyObject } from "node:crypto";
import type { z } from "zod";
import type { Capabilities, DataEndpoint } from "@vmc/protocol/bus";
import type { BusClient, BusLogger, BusMessage } from "@vmc/server/bus/client";

export interface AgentPluginContext {
  agentId: string;
  bus: BusClient;
  /** The controller's public key: verify signed messages with `verifyMessage` from @vmc/protocol/signing. */
  controllerKey: KeyObject;
  /** The agent's state dir (the plugin may keep files under a sub-directory of its own name). */
  stateDir: string;
  log: BusLogger;
}

export interface AgentPluginInstance {
  /** Merged into HELLO's capabilities (e.g. `{ transfer: true }`). */
  capabilities?: Partial<z.infer<typeof Capabilities>>;
  /** Announced as HELLO's `dataEndpoint`. */
  dataEndpoint?: z.infer<typeof DataEndpoint>;
  /**
   * A JSON inbox message with a `type` the agent does not handle itself. Return true when
   * handled; the agent acks the message once the returned promise settles.
   */
  onInboxJson?(type: string, json: unknown, message: BusMessage): boolean | Promise<boolean>;
  /** A message with a `vmc-type` header (binary frames), offered before any JSON parsing; same contract. */
  onInboxBinary?(message: BusMessage): boolean | Promise<boolean>;
  stop?(): Promise<void>;
}

export interface AgentPlugin {
  name: string;
  start(context: AgentPluginContext): Promise<AgentPluginInstance>;
}
