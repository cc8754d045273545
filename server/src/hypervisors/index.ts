/**
 * The drivers, by name, and the choice of a default: QEMU when it is installed, else the
 * process driver (a development stand-in). VirtualBox is used only when asked for.
 */
import type { DriverName } from "@vmc/protocol";
import type { Driver, DriverFactory } from "./driver";
import { qemuFactory } from "./qemu/driver";
import { VmStore } from "../store/vms";
import { notSupported } from "./errors";

export const factories: Partial<Record<DriverName, DriverFactory>> = {
  qemu: qemuFactory,
};

export function driverByName(home: string, name: DriverName): Driver {
  const factory = factories[name];
  if (!factory) throw notSupported(name, "run here (driver not built in)");
  return factory.create(home);
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
