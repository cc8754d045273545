/**
 * The controller's transfer API: put host files into an agent, get an agent's files out.
 * Direct data channel when the agent's endpoint answers, else the same frames over the bus.
 * Used by `vmc cp` and (next) the `file.put` / `file.get` JSON-RPC methods.
 */
import { randomBytes, type KeyObject } from "node:crypto";
import { connect, type Socket } from "node:net";
import { basename, posix } from "node:path";
import { Destinations, XferFrameHeaders, type XferCancel, type XferGrant } from "@vmc/protocol/bus";
import { signMessage } from "@vmc/protocol/signing";
import { AcceptFrame, DATA_HEADER_BYTES, DATA_PROTOCOL_VERSION, FrameType } from "@vmc/protocol/transfer";
import type { BusClient } from "../bus/client";
import { BusFrameChannel } from "./bus-channel";
import { TransferError } from "./errors";
import { failChannel, jsonPayload, parseControl, remoteError, SocketFrameChannel, type FrameChannel } from "./frames";
import type { ProgressListener } from "./progress";
import { receiveTree, type ReceiveLimits } from "./receiver";
import { sendPlan } from "./sender";
import { planTree } from "./walk";

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

/** An agent as the transfer sees it. */
export interface TransferTarget {
  agentId: string;
  /**
   * The data endpoint as THIS host must dial it (for a VM: 127.0.0.1 and the forwarded host
   * port from the VM registry, not the guest address the HELLO announces). Absent: bus only.
   */
  dialEndpoint?: { host: string; port: number };
}

export interface TransferOptions {
  recursive?: boolean;
  resume?: boolean;
  keepPartial?: boolean;
  /** `auto`: direct when the endpoint connects, else the bus. */
  channel?: "auto" | "direct" | "bus";
  chunkSize?: number;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  /** Limits on what the agent may write on this host (get). */
  limits?: Partial<ReceiveLimits>;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

export interface TransferOutcome {
  entries: number;
  files: number;
  bytes: number;
  bytesSent: number;
  channel: "direct" | "bus";
  elapsedMs: number;
  /** Host path written (get). */
  root?: string;
}

/** Sends a signed transfer message to an agent's inbox. */
export type DeliverToAgent = (agentId: string, message: XferGrant | XferCancel) => Promise<void>;

export interface TransferClientOptions {
  /** The controller's Ed25519 private key (grants are signed with it). */
  signingKey: KeyObject;
  /** The bus: grants go to agent inboxes through it, and it carries the fallback. */
  bus?: BusClient;
  /** Overrides how grants reach the agent (default: `bus.publishJson` to the agent's inbox). */
  deliver?: DeliverToAgent;
  /** Seconds a grant stays valid before its token is presented. */
  grantTtlMs?: number;
}

export class TransferClient {
  constructor(private readonly options: TransferClientOptions) {}

  /** Copies a host file or tree into the agent at `remotePath` (into it when it is a directory). */
  async put(target: TransferTarget, source: string, remotePath: string, opts: TransferOptions = {}): Promise<TransferOutcome> {
    const plan = await planTree(source, opts.recursive ?? false);
    const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    return this.run(target, { direction: "put", path: remotePath, sourceName: basename(source), recursive: opts.recursive ?? false }, opts, async (ch, channel) => {
      const r = await sendPlan(ch, plan, {
        chunkSize,
        resume: opts.resume ?? false,
        windowBytes: channel === "bus" ? 8 * 1024 * 1024 : 32 * 1024 * 1024,
        onProgress: opts.onProgress,
        signal: opts.signal,
        idleTimeoutMs: opts.idleTimeoutMs,
      });
      return { ...r };
    });
  }

  /** Copies an agent's file or tree to `hostPath` (into it when it is a directory). */
  async get(target: TransferTarget, remotePath: string, hostPath: string, opts: TransferOptions = {}): Promise<TransferOutcome> {
    const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    const name = posix.basename(remotePath.replace(/\/+$/, "")) || "root";
    return this.run(target, { direction: "get", path: remotePath, recursive: opts.recursive ?? false }, opts, async (ch) => {
      const r = await receiveTree(ch, {
        destination: hostPath,
        sourceName: name,
        chunkSize,
        resume: opts.resume ?? false,
        keepPartial: opts.keepPartial ?? false,
        limits: opts.limits,
        onProgress: opts.onProgress,
        signal: opts.signal,
        idleTimeoutMs: opts.idleTimeoutMs,
      });
      return { entries: r.entries, files: r.files, bytes: r.bytes, bytesSent: r.bytesReceived, root: r.root };
    });
  }

  private async run(
    target: TransferTarget,
    what: Pick<XferGrant, "direction" | "path" | "recursive"> & { sourceName?: string },
    opts: TransferOptions,
    body: (ch: FrameChannel, channel: "direct" | "bus") => Promise<Omit<TransferOutcome, "channel" | "elapsedMs">>,
  ): Promise<TransferOutcome> {
    const started = Date.now();
    const mode = opts.channel ?? "auto";
    let lastError: TransferError | undefined;
    const channels: ("direct" | "bus")[] = mode === "auto" ? ["direct", "bus"] : [mode];
    for (const channel of channels) {
      if (channel === "direct" && !target.dialEndpoint) {
        lastError = new TransferError("io", `agent ${target.agentId} announces no data endpoint`);
        continue;
      }
      if (channel === "bus" && !this.options.bus) {
        lastError = new TransferError("io", "no bus to fall back to");
        continue;
      }
      const transferId = randomBytes(18).toString("base64url");
      const grant = this.sign<XferGrant>({
        type: "XFER_GRANT",
        transferId,
        agentId: target.agentId,
        ...what,
        resume: opts.resume ?? false,
        keepPartial: opts.keepPartial ?? false,
        chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
        token: randomBytes(32).toString("base64url"),
        channel,
        replyTo: `/topic/vmc.xfer.${transferId}`,
        issuedAt: Date.now(),
        expiresAt: Date.now() + (this.options.grantTtlMs ?? 60_000),
      });
      let ch: FrameChannel;
      let cleanup = () => {};
      try {
        if (channel === "direct") {
          const socket = await dial(target.dialEndpoint!, opts.connectTimeoutMs ?? 3000);
          ch = new SocketFrameChannel(socket);
          await this.deliver(target.agentId, grant);
        } else {
          const bus = this.options.bus!;
          const busCh = new BusFrameChannel(transferId, Destinations.agentInbox(target.agentId), busPublisher(bus), 24 * 1024 * 1024);
          const sub = bus.subscribe(grant.replyTo, (m) => {
            if (m.headers[XferFrameHeaders.transfer] === transferId) busCh.push(m.headers, m.binaryBody);
          });
          await sub.ready;
          cleanup = () => sub.unsubscribe();
          ch = busCh;
          await this.deliver(target.agentId, grant);
        }
      } catch (err) {
        lastError = err instanceof TransferError ? err : new TransferError("io", `${channel} channel to ${target.agentId}: ${(err as Error).message}`);
        if (mode === "auto" && channel === "direct") continue;
        throw lastError;
      }
      try {
        ch.setMaxFrameBytes(grant.chunkSize + DATA_HEADER_BYTES + 1);
        await ch.send(FrameType.OPEN, jsonPayload({ version: DATA_PROTOCOL_VERSION, transferId, token: grant.token }));
        const first = await ch.next(opts.connectTimeoutMs ?? 15_000);
        if (first.type !== FrameType.ACCEPT) throw first.type === FrameType.ERROR || first.type === FrameType.CANCEL ? remoteError(first) : new TransferError("protocol", "agent did not accept");
        parseControl(first, AcceptFrame, "ACCEPT");
        const onAbort = () => void this.cancel(target.agentId, transferId).catch(() => undefined);
        opts.signal?.addEventListener("abort", onAbort);
        try {
          const r = await body(ch, channel);
          ch.end();
          return { ...r, channel, elapsedMs: Date.now() - started };
        } finally {
          opts.signal?.removeEventListener("abort", onAbort);
        }
      } catch (err) {
        const e = err instanceof TransferError ? err : new TransferError("io", (err as Error).message);
        await failChannel(ch, e);
        throw e;
      } finally {
        cleanup();
      }
    }
    throw lastError ?? new TransferError("io", "no channel");
  }

  private async cancel(agentId: string, transferId: string): Promise<void> {
    if (!this.options.bus && !this.options.deliver) return;
    await this.deliver(agentId, this.sign<XferCancel>({ type: "XFER_CANCEL", transferId, agentId, issuedAt: Date.now() }));
  }

  private sign<T extends XferGrant | XferCancel>(message: Omit<T, "signature">): T {
    return signMessage(message, this.options.signingKey) as unknown as T;
  }

  private deliver(agentId: string, message: XferGrant | XferCancel): Promise<void> {
    if (this.options.deliver) return this.options.deliver(agentId, message);
    if (!this.options.bus) throw new TransferError("io", "no way to deliver the grant (no bus)");
    return this.options.bus.publishJson(Destinations.agentInbox(agentId), message, { headers: { persistent: "true", expiration: "60000" } });
  }
}

/** A PublishFrame over a BusClient, with write backpressure. */
export function busPublisher(bus: BusClient) {
  return async (destination: string, headers: Record<string, string>, body: Buffer) => {
    await bus.publish(destination, body, { headers });
    if (bus.bufferedBytes > 4 * 1024 * 1024) await bus.drained();
  };
}

function dial(endpoint: { host: string; port: number }, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: endpoint.host, port: endpoint.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TransferError("io", `no answer from ${endpoint.host}:${endpoint.port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(new TransferError("io", `cannot reach ${endpoint.host}:${endpoint.port}: ${e.message}`));
    });
  });
}
