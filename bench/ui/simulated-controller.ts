/**
 * SIMULATION FOR bench/ui ONLY — not a controller. A stand-in for `vmc serve --stdio` that the
 * extension starts through its `vmc.vmcPath` setting: it answers the handshake and the list
 * methods with N simulated machines and agents (no VMs, no broker), and sends `vm.stateChanged`
 * / `agent.changed` when the bench asks, so the bench can time notification → tree without a
 * fleet of 500 real VMs. It connects to the bench's control port (env VMC_UI_BENCH_CONTROL) and
 * reports, one JSON line each, when it started, answered the handshake and the lists, and the
 * moment it wrote each notification it was asked for.
 */
import { createConnection } from "node:net";
import { createInterface } from "node:readline";
import { ResponseError, createMessageConnection, StreamMessageReader, StreamMessageWriter } from "vscode-jsonrpc/node";
import {
  AgentChangedNotification,
  AgentListRequest,
  CmdListRequest,
  HandshakeRequest,
  SnapshotListRequest,
  VmListRequest,
  VmStateChangedNotification,
  type AgentInfo,
  type Handshake,
  type VmInfo,
} from "@vmc/protocol/rpc";
import type { VmState } from "@vmc/protocol/vm";

/** What the bench sends on the control connection (one JSON object per line). */
export type SimulationRequest = { kind: "vm"; name: string; state: VmState } | { kind: "agent"; agentId: string; online: boolean };
/** What the simulation reports back. */
export type SimulationEvent = { event: "started" | "handshake" | "vm.list" | "agent.list"; at: number } | { event: "sent"; at: number; request: SimulationRequest };

const count = Number.parseInt(process.env.VMC_UI_BENCH_MACHINES ?? "500", 10);
const controlPort = Number.parseInt(process.env.VMC_UI_BENCH_CONTROL ?? "0", 10);
const pad = (i: number) => String(i).padStart(3, "0");
const started = Date.now();

const vms = new Map<string, VmInfo>();
const agents = new Map<string, AgentInfo>();
for (let i = 0; i < count; i++) {
  const name = `sim-${pad(i)}`;
  vms.set(name, { name, driver: "qemu", state: i % 2 ? "stopped" : "running", agentId: name, memoryMiB: 256, cpus: 1, agentOnline: i % 2 === 0 });
  agents.set(name, { agentId: name, labels: { role: i % 3 ? "worker" : "db" }, online: i % 2 === 0, lastSeen: started, vm: name, running: 0 });
}

const control = createConnection({ host: "127.0.0.1", port: controlPort, noDelay: true });
const report = (e: SimulationEvent) => control.write(`${JSON.stringify(e)}\n`);
control.on("error", () => process.exit(1));
report({ event: "started", at: started });

const rpc = createMessageConnection(new StreamMessageReader(process.stdin), new StreamMessageWriter(process.stdout));
rpc.onRequest("initialize", () => ({ capabilities: {}, serverInfo: { name: "vmc-simulated-for-bench", version: "0" } }));
rpc.onNotification("initialized", () => undefined);
rpc.onRequest("shutdown", () => null);
rpc.onNotification("exit", () => process.exit(0));
rpc.onRequest(HandshakeRequest.type, (): Handshake => {
  report({ event: "handshake", at: Date.now() });
  const features = { pause: true, snapshots: true, snapshotsWithMemory: true, templates: true, gracefulStop: true, isolation: "vm" as const };
  return { serverVersion: "simulated", protocolVersion: 1, drivers: [{ name: "qemu", available: true, features }], defaultDriver: "qemu", broker: "stomp://simulated", brokerConnected: true, home: "/simulated" };
});
rpc.onRequest(VmListRequest.type, () => {
  report({ event: "vm.list", at: Date.now() });
  return [...vms.values()];
});
rpc.onRequest(AgentListRequest.type, () => {
  report({ event: "agent.list", at: Date.now() });
  return [...agents.values()];
});
rpc.onRequest(CmdListRequest.type, () => []);
rpc.onRequest(SnapshotListRequest.type, () => []);
rpc.onRequest((method: string) => new ResponseError(-32601, `the bench's simulated controller does not serve ${method}`));
rpc.listen();

createInterface({ input: control }).on("line", (line) => {
  const request = JSON.parse(line) as SimulationRequest;
  if (request.kind === "vm") {
    const vm = vms.get(request.name);
    if (!vm) return;
    const previous = vm.state;
    vm.state = request.state;
    rpc.sendNotification(VmStateChangedNotification.type, { name: vm.name, state: vm.state, previous, cause: "simulated", at: Date.now() });
  } else {
    const agent = agents.get(request.agentId);
    if (!agent) return;
    agent.online = request.online;
    agent.lastSeen = Date.now();
    rpc.sendNotification(AgentChangedNotification.type, agent);
  }
  report({ event: "sent", at: Date.now(), request });
});
