/**
 * Hosts many agents in one process for the fan-out benchmark: `startAgent` per id, all sharing
 * one bus connection (as a real host would run one agent per VM, this packs a few hundred per
 * process so 1,000 fit on a small machine). Prints `ready N` once all are started and each has
 * its next command's wrapper waiting.
 *
 * usage: agent-host.ts BROKER_URL PUBKEY STATE_DIR PREFIX COUNT [AGENT_MODULE]
 * AGENT_MODULE: another agent.ts to host instead of this build's (a baseline checkout's).
 */
import { join } from "node:path";
import type { AgentHandle, startAgent as StartAgent } from "@vmc/agent/agent";
import { BusClient } from "@vmc/server/bus/client";

const [brokerUrl, key, stateDir, prefix, countText, agentModule] = process.argv.slice(2);
const { startAgent } = (await import(agentModule ?? "@vmc/agent/agent")) as { startAgent: typeof StartAgent };
if (!brokerUrl || !key || !stateDir || !prefix || !countText) throw new Error("usage: agent-host.ts BROKER_URL PUBKEY STATE_DIR PREFIX COUNT");
const bus = new BusClient({ brokerUrl, name: `host ${prefix}`, heartbeatIncomingMs: 5000 });
await bus.connect(30_000);
const agents: AgentHandle[] = [];
for (let i = 0; i < Number(countText); i++) {
  const id = `${prefix}.${i}`;
  agents.push(await startAgent({ id, bus, controllerKey: key, stateDir: join(stateDir, id), heartbeatIntervalMs: 10_000, log: () => {} }));
}
// Each agent's next wrapper is spawned ahead once it said HELLO (an older agent module has no warm()).
await Promise.all(agents.map((a) => (a as Partial<AgentHandle>).warm?.()));
process.stdout.write(`ready ${agents.length}\n`);
const stop = async () => {
  await Promise.allSettled(agents.map((a) => a.stop("bench over")));
  await bus.close();
  process.exit(0);
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
