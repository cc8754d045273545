import { openExecTerminal } from "../terminal/exec-terminal";
import { machineArg, type VmcCommand } from "./services";

export const openTerminal: VmcCommand = {
  id: "vmc.machine.openTerminal",
  async run(s, arg) {
    const name = await machineArg(s, arg);
    if (!name) return;
    openExecTerminal(s.controller, name);
  },
};
