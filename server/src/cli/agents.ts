/** `vmc agents [--json] [--broker URL]`: the agents that answer right now. */
import { parseArgs } from "node:util";
import { openFleetSession } from "../fleet/session";
import { agentsJson, agentsTable } from "../fleet/render";

const USAGE = "usage: vmc agents [--json] [--broker URL] [--wait MS]";

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { json: { type: "boolean" }, broker: { type: "string" }, wait: { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`vmc agents: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(`${USAGE}\n\nAsks every agent to announce itself (DISCOVER) and lists those that answer.\n--wait MS: stop listening once no agent has answered for MS ms (default 200).`);
    return 0;
  }
  const quietMs = values.wait === undefined ? undefined : Number(values.wait);
  if (quietMs !== undefined && !(Number.isFinite(quietMs) && quietMs >= 0)) {
    console.error(`vmc agents: --wait takes milliseconds\n${USAGE}`);
    return 2;
  }
  const session = await openFleetSession({ brokerUrl: values.broker, name: "vmc-agents" });
  try {
    const agents = await session.fleet.discover(quietMs === undefined ? {} : { quietMs, firstAnswerMs: Math.max(quietMs, 1000) });
    process.stdout.write(values.json ? `${JSON.stringify(agentsJson(agents), null, 2)}\n` : agentsTable(agents));
    return 0;
  } finally {
    await session.close();
  }
}
