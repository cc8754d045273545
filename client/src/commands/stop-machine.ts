import { VmStopRequest } from "@vmc/protocol/rpc";
import { lifecycle } from "./machine-lifecycle";
import type { VmcCommand } from "./services";

export const stopMachine: VmcCommand = {
  id: "vmc.machine.stop",
  run: (s, arg, selection) => lifecycle(s, arg, selection, ["running", "paused", "starting", "error"], "Stopping", (name) => s.controller.request(VmStopRequest.type, { name })),
};
