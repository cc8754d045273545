import { VmStartRequest } from "@vmc/protocol/rpc";
import { lifecycle } from "./machine-lifecycle";
import type { VmcCommand } from "./services";

export const startMachine: VmcCommand = {
  id: "vmc.machine.start",
  run: (s, arg, selection) => lifecycle(s, arg, selection, ["stopped", "saved", "error"], "Starting", (name) => s.controller.request(VmStartRequest.type, { name })),
};
