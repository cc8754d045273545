import type { VmcCommand } from "./services";

export const showLog: VmcCommand = {
  id: "vmc.showLog",
  run: async (s) => s.log.show(),
};
