/**
 * The transfer module in a process of its own: for tests and benchmarks, and for a machine that
 * needs only transfers. Grants arrive as JSON lines on stdin and, with `--broker`, in the agent's
 * bus inbox (with the bus fallback). Prints one JSON line `{"dataEndpoint":{host,port}}` when ready.
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Destinations, XFER_FRAME_TYPE, XferFrameHeaders } from "@vmc/protocol/bus";
import { publicKeyFromBase64 } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import { busPublisher } from "@vmc/server/transfer/client";
import { createTransferPlugin } from "./plugin";

const { values } = parseArgs({
  options: {
    "agent-id": { type: "string" },
    "public-key": { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    broker: { type: "string" },
    "grant-wait-ms": { type: "string", default: "10000" },
  },
});
if (!values["agent-id"] || !values["public-key"]) {
  console.error("usage: standalone --agent-id ID --public-key BASE64 [--host H] [--port P] [--broker URL]");
  process.exit(2);
}
const agentId = values["agent-id"];
const bus = values.broker ? new BusClient({ brokerUrl: values.broker, name: `xfer-${agentId}` }) : undefined;
if (bus) await bus.connect(15_000);
const plugin = createTransferPlugin({
  agentId,
  controllerPublicKey: publicKeyFromBase64(values["public-key"]),
  listen: { host: values.host!, port: Number(values.port) },
  publishFrame: bus ? busPublisher(bus) : undefined,
  grantWaitMs: Number(values["grant-wait-ms"]),
});
const dataEndpoint = await plugin.start();
if (bus) {
  const sub = bus.subscribe(Destinations.agentInbox(agentId), (m) => {
    if (m.headers[XferFrameHeaders.type] === XFER_FRAME_TYPE) return plugin.handleFrame(m.headers, m.binaryBody);
    try {
      plugin.handleInbox(JSON.parse(m.body));
    } catch {
      // not JSON: not for the transfer module
    }
  });
  await sub.ready;
}
createInterface({ input: process.stdin }).on("line", (line) => {
  try {
    plugin.handleInbox(JSON.parse(line));
  } catch {
    console.error("standalone: ignoring a line that is not JSON");
  }
});
process.stdin.on("end", () => void plugin.close().then(() => bus?.close()).then(() => process.exit(0)));
console.log(JSON.stringify({ dataEndpoint }));
