/**
 * The agent's side of file transfer, as one module the agent mounts: a TCP data endpoint, the
 * grant book, and the bus fallback. See docs/TRANSFER.md.
 */
import type { KeyObject } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { TransferInboxMessage, XferFrameHeaders, type XferGrant } from "@vmc/protocol/bus";
import { DATA_HEADER_BYTES, DATA_PROTOCOL_VERSION, FrameType, OpenFrame } from "@vmc/protocol/transfer";
import { BusFrameChannel, type PublishFrame } from "@vmc/server/transfer/bus-channel";
import { TransferError } from "@vmc/server/transfer/errors";
import { failChannel, jsonPayload, parseControl, SocketFrameChannel, type FrameChannel } from "@vmc/server/transfer/frames";
import { receiveTree, type ReceiveLimits } from "@vmc/server/transfer/receiver";
import { sendPlan } from "@vmc/server/transfer/sender";
import { planTree } from "@vmc/server/transfer/walk";
import { basename } from "node:path";
import { GrantBook } from "./grants";

/** The guest port the data endpoint listens on inside a VM (the QEMU driver forwards it). */
export const DATA_PORT_GUEST = 7733;

export interface TransferPluginOptions {
  agentId: string;
  /** The controller's Ed25519 public key: grants must carry its signature. */
  controllerPublicKey: KeyObject;
  /** Where the data endpoint listens (VM: 0.0.0.0:7733; an agent on a host: 127.0.0.1:0). */
  listen?: { host: string; port: number };
  /** Host announced in HELLO when it differs from `listen.host` (e.g. `0.0.0.0` → the guest's address). */
  advertiseHost?: string;
  /** Sends a bus-fallback frame (binary body, `content-length`); resolves when the bus can take more. */
  publishFrame?: PublishFrame;
  /** Limits on what a controller may write here (the controller is trusted; defaults are generous). */
  limits?: Partial<ReceiveLimits>;
  /** How long a connection may wait for its grant to arrive over the bus. */
  grantWaitMs?: number;
  log?: (line: string) => void;
}

export interface TransferPlugin {
  /** Starts the data endpoint; the result goes into HELLO's `dataEndpoint`. */
  start(): Promise<{ host: string; port: number }>;
  /** A JSON inbox message whose `type` starts with `XFER_`. Never throws. */
  handleInbox(message: unknown): void;
  /** A binary inbox message with header `vmc-type: XFER_FRAME`. Never throws. */
  handleFrame(headers: Record<string, string>, body: Uint8Array): void;
  /** Transfers under way. */
  readonly active: number;
  close(): Promise<void>;
}

const MAX_CONNECTIONS = 32;

export function createTransferPlugin(options: TransferPluginOptions): TransferPlugin {
  const log = options.log ?? ((line: string) => console.error(`vmc agent transfer: ${line}`));
  const book = new GrantBook(options.agentId, options.controllerPublicKey);
  const sessions = new Map<string, FrameChannel>(); // transferId → channel
  const busChannels = new Map<string, BusFrameChannel>();
  const sockets = new Set<Socket>();
  let server: Server | undefined;

  const serve = async (ch: FrameChannel, channel: XferGrant["channel"]) => {
    let transferId = "?";
    try {
      const open = parseControl(await ch.next(10_000), OpenFrame, "OPEN");
      transferId = open.transferId;
      const grant = await book.take(open.token, open.transferId, channel, options.grantWaitMs ?? 10_000);
      if (typeof grant === "string") throw new TransferError("denied", `transfer refused: ${grant}`);
      if (sessions.has(grant.transferId)) throw new TransferError("denied", "transfer already running");
      sessions.set(grant.transferId, ch);
      ch.setMaxFrameBytes(grant.chunkSize + DATA_HEADER_BYTES + 1);
      await ch.send(FrameType.ACCEPT, jsonPayload({ version: DATA_PROTOCOL_VERSION }));
      log(`${grant.direction} ${grant.path} (${grant.transferId}, ${channel})`);
      if (grant.direction === "put") {
        await receiveTree(ch, {
          destination: grant.path,
          sourceName: grant.sourceName ?? basename(grant.path),
          chunkSize: grant.chunkSize,
          resume: grant.resume,
          keepPartial: grant.keepPartial,
          limits: { maxEntries: 10_000_000, allowEscapingSymlinks: true, ...options.limits },
        });
      } else {
        const plan = await planTree(grant.path, grant.recursive);
        await sendPlan(ch, plan, { chunkSize: grant.chunkSize, resume: grant.resume, windowBytes: channel === "bus" ? 8 * 1024 * 1024 : 32 * 1024 * 1024 });
      }
      ch.end();
    } catch (err) {
      const e = err instanceof TransferError ? err : new TransferError("io", (err as Error).message);
      if (!e.remote) log(`transfer ${transferId} failed: ${e.code}: ${e.message}`);
      await failChannel(ch, e);
    } finally {
      sessions.delete(transferId);
    }
  };

  return {
    async start() {
      const listen = options.listen ?? { host: "127.0.0.1", port: 0 };
      server = createServer((socket) => {
        if (sockets.size >= MAX_CONNECTIONS) return socket.destroy();
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        void serve(new SocketFrameChannel(socket), "direct");
      });
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        server!.listen(listen.port, listen.host, () => resolve());
      });
      const address = server.address();
      if (!address || typeof address !== "object") throw new Error("data endpoint has no address");
      return { host: options.advertiseHost ?? (listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host), port: address.port };
    },

    handleInbox(message) {
      const parsed = TransferInboxMessage.safeParse(message);
      if (!parsed.success) return log(`invalid transfer message: ${parsed.error.issues[0]?.message}`);
      const m = parsed.data;
      if (m.type === "XFER_GRANT") {
        const refused = book.admit(m);
        if (refused) log(`grant ${m.transferId} refused: ${refused}`);
        return;
      }
      if (m.agentId !== options.agentId || !book.verifyCancel(m)) return log(`cancel ${m.transferId} refused: bad signature`);
      sessions.get(m.transferId)?.destroy(new TransferError("cancelled", "cancelled by the controller"));
    },

    handleFrame(headers, body) {
      const transferId = headers[XferFrameHeaders.transfer] ?? "";
      let ch = busChannels.get(transferId);
      if (!ch) {
        const grant = book.busGrant(transferId);
        if (!grant || !options.publishFrame || busChannels.size >= MAX_CONNECTIONS) return; // not ours, or not yet granted: dropped
        const created = new BusFrameChannel(transferId, grant.replyTo, options.publishFrame, 64 * 1024 * 1024, () => busChannels.delete(transferId));
        busChannels.set(transferId, created);
        ch = created;
        void serve(created, "bus");
      }
      ch.push(headers, body);
    },

    get active() {
      return sessions.size;
    },

    async close() {
      for (const ch of sessions.values()) ch.destroy(new TransferError("cancelled", "agent shutting down"));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    },
  };
}
