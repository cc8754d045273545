/** Typed hypervisor errors: every driver throws these (VmcError with a domain code and data). */
import { VmcError, VmcErrorCodes, type DriverName, type VmState } from "@vmc/protocol";

export function unknownVm(name: string): VmcError {
  return new VmcError(VmcErrorCodes.UnknownVm, `no VM named '${name}'`, { name });
}

export function alreadyExists(name: string): VmcError {
  return new VmcError(VmcErrorCodes.AlreadyExists, `a VM named '${name}' already exists`, { name });
}

/** The VM is in `state`, and `operation` needs one of `allowed`. */
export function invalidState(name: string, operation: string, state: VmState, allowed: readonly VmState[]): VmcError {
  return new VmcError(
    VmcErrorCodes.InvalidState,
    `cannot ${operation} VM '${name}': it is ${state} (needs ${allowed.join(" or ")})`,
    { name, operation, state, allowed: [...allowed] },
  );
}

export function notSupported(driver: DriverName, operation: string): VmcError {
  return new VmcError(VmcErrorCodes.NotSupported, `the ${driver} driver cannot ${operation}`, { driver, operation });
}

export function unknownSnapshot(name: string, snapshot: string): VmcError {
  return new VmcError(VmcErrorCodes.UnknownSnapshot, `VM '${name}' has no snapshot '${snapshot}'`, { name, snapshot });
}

export function hypervisorFailed(driver: DriverName, operation: string, detail: string, data: Record<string, unknown> = {}): VmcError {
  return new VmcError(VmcErrorCodes.HypervisorFailed, `${driver}: ${operation} failed: ${detail}`, { driver, operation, ...data });
}

export function imageMissing(path: string, detail: string): VmcError {
  return new VmcError(VmcErrorCodes.ImageMissing, `guest image unusable: ${path}: ${detail}`, { path });
}
