/**
 * The plugins a `vmc agent` process mounts: the file-transfer data channel (agent/src/transfer,
 * see docs/TRANSFER.md), adapted to the agent's plugin hook.
 */
import { XFER_FRAME_TYPE } from "@vmc/protocol/bus";
import type { AgentPlugin } from "./plugin";
import { createTransferPlugin, DATA_PORT_GUEST } from "./transfer/plugin";

export interface DefaultPluginOptions {
  /** Inside a VM the data endpoint listens on 0.0.0.0:7733 (forwarded by the VM driver); on a host on 127.0.0.1, any port. */
  inVm: boolean;
  /** Explicit `host:port` for the data endpoint. */
  dataListen?: string;
  /** No data endpoint at all. */
  noTransfer?: boolean;
}

export function defaultPlugins(options: DefaultPluginOptions): AgentPlugin[] {
  if (options.noTransfer) return [];
  return [transferPlugin(options)];
}

function transferPlugin(options: DefaultPluginOptions): AgentPlugin {
  const listen = parseListen(options.dataListen) ?? (options.inVm ? { host: "0.0.0.0", port: DATA_PORT_GUEST } : { host: "127.0.0.1", port: 0 });
  return {
    name: "transfer",
    async start(ctx) {
      const xfer = createTransferPlugin({
        agentId: ctx.agentId,
        controllerPublicKey: ctx.controllerKey,
        listen,
        publishFrame: async (destination, headers, body) => {
          await ctx.bus.publish(destination, body, { headers });
          await ctx.bus.drained();
        },
        log: (line) => ctx.log("info", `transfer: ${line}`),
      });
      const dataEndpoint = await xfer.start();
      return {
        capabilities: { transfer: true },
        dataEndpoint,
        onInboxJson(type, json) {
          if (!type.startsWith("XFER_")) return false;
          xfer.handleInbox(json);
          return true;
        },
        onInboxBinary(message) {
          if (message.headers["vmc-type"] !== XFER_FRAME_TYPE) return false;
          xfer.handleFrame({ ...message.headers }, message.binaryBody);
          return true;
        },
        stop: () => xfer.close(),
      };
    },
  };
}

function parseListen(value: string | undefined): { host: string; port: number } | undefined {
  if (!value) return undefined;
  const at = value.lastIndexOf(":");
  const port = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--data-listen '${value}' is not host:port`);
  return { host: value.slice(0, at), port };
}
