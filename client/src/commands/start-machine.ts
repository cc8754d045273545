import { VmStartRequest } from "@vmc/protocol/rpc";
import { lifecycle } from "./machine-lifecycle";
import type { VmcCommand } from "./services";

export const startMachine: VmcCommand = {
  id: "vmc.machine.start",
  run: (s, arg) => lifecycle(s, arg, ["stopped", "saved", "error"], "Starting", (name) => s.controller.request(VmStartRequest.type, { name })),
};
