import { VmResumeRequest } from "@vmc/protocol/rpc";
import { lifecycle } from "./machine-lifecycle";
import type { VmcCommand } from "./services";

export const resumeMachine: VmcCommand = {
  id: "vmc.machine.resume",
  run: (s, arg, selection) => lifecycle(s, arg, selection, ["paused"], "Resuming", (name) => s.controller.request(VmResumeRequest.type, { name })),
};
