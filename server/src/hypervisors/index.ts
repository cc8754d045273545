/**
 * The drivers, by name, and the choice of a default: QEMU when it is installed, else the
 * process driver (a development stand-in). VirtualBox is used only when asked for.
 */
import type { DriverName } from "@vmc/protocol";
import type { Driver, DriverFactory } from "./driver";
import { qemuFactory } from "./qemu/driver";
import { processFactory } from "./process/driver";
import { virtualboxFactory } from "./virtualbox/driver";
import { VmStore } from "../store/vms";

export const factories: Record<DriverName, DriverFactory> = {
  qemu: qemuFactory,
  virtualbox: virtualboxFactory,
  process: processFactory,
};

export function driverByName(home: string, name: DriverName): Driver {
  return factories[name].create(home);
}

/** `VMC_DRIVER` when set, else QEMU when available, else the process driver. */
export async function defaultDriverName(env: NodeJS.ProcessEnv = process.env): Promise<DriverName> {
  const forced = env.VMC_DRIVER;
  if (forced === "qemu" || forced === "virtualbox" || forced === "process") return forced;
  return (await qemuFactory.available()) ? "qemu" : "process";
}

/** The driver that owns an existing VM (UnknownVm when there is none). */
export function driverForVm(home: string, name: string): Driver {
  return driverByName(home, new VmStore(home).read(name).driver);
}
