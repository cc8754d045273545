import { VmPauseRequest } from "@vmc/protocol/rpc";
import { lifecycle } from "./machine-lifecycle";
import type { VmcCommand } from "./services";

export const pauseMachine: VmcCommand = {
  id: "vmc.machine.pause",
  run: (s, arg, selection) => lifecycle(s, arg, selection, ["running"], "Pausing", (name) => s.controller.request(VmPauseRequest.type, { name })),
};
