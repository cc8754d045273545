import type { VmcCommand } from "./services";

/** Re-reads everything from the controller (and asks agents to announce themselves). */
export const refresh: VmcCommand = {
  id: "vmc.refresh",
  async run(s) {
    await Promise.all([s.machines.reload(), s.agents.reload(true), s.commands.reload()]);
  },
};
