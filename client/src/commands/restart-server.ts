import type { VmcCommand } from "./services";

export const restartServer: VmcCommand = {
  id: "vmc.server.restart",
  run: (s) => s.controller.restart(),
};
