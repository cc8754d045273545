/**
 * Where the controller dials an agent's data endpoint. An agent in a VM announces its guest
 * address (e.g. 0.0.0.0:7733), which the host cannot reach; the VM driver forwards that guest
 * port to a host loopback port recorded in the VM's vm.json (`forwards`). Anything else is
 * dialled as announced.
 */
import type { Hello } from "@vmc/protocol/bus";
import type { VmRecord } from "../store/vms";
import type { TransferTarget } from "./client";

/** `name` is an agent id or a VM name (a VM named N has the agent id N unless told otherwise). */
export function resolveTransferTarget(name: string, hello: Hello | undefined, vms: VmRecord[]): TransferTarget {
  const vm = vms.find((v) => v.name === name) ?? vms.find((v) => v.agentId === name);
  const agentId = vm?.agentId ?? name;
  const announced = hello?.dataEndpoint;
  if (vm) {
    const guestPort = announced?.port;
    const forward = vm.forwards.find((f) => f.guestPort === guestPort) ?? (vm.forwards.length === 1 ? vm.forwards[0] : undefined);
    return forward ? { agentId, dialEndpoint: { host: "127.0.0.1", port: forward.hostPort } } : { agentId };
  }
  if (!announced) return { agentId };
  const host = announced.host === "0.0.0.0" || announced.host === "::" ? "127.0.0.1" : announced.host;
  return { agentId, dialEndpoint: { host, port: announced.port } };
}
