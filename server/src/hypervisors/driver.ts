/**
 * The hypervisor driver contract, in the manner of lima's pkg/driver: small interfaces composed
 * into one {@link Driver}, a {@link DriverFeatures} record instead of capability checks scattered
 * in callers, one {@link VmState} everywhere, and typed errors (see ./errors):
 * - `UnknownVm` when no VM has the name, `AlreadyExists` on a name clash;
 * - `InvalidState` when the VM is in the wrong state (`data.state` names the current one);
 * - `NotSupported` when the driver cannot do the operation (`data.driver`);
 * - `UnknownSnapshot`, `HypervisorFailed` (with the hypervisor's own message), `ImageMissing`.
 *
 * VMs live in the registry ($VMC_HOME/vms/<name>/, see store/vms). A running VM is a detached
 * process that survives the controller; every method works from the registry alone, so any
 * controller instance (or several at once) can drive a VM another one started.
 *
 * @packageDocumentation
 */
import type { DriverName, VmState } from "@vmc/protocol";
import type { VmRecord } from "../store/vms";

export type { VmState };

/** The parts of a guest image a driver boots (a structural subset of the image builder's GuestImage). */
export interface BootImage {
  id: string;
  kernel: string;
  initrd: string;
  /** Read-only root file system shared by every VM (never written, left out of snapshots). */
  rootfs: string;
  /** qcow2 base disk that each VM's writable overlay is a linked clone of. */
  baseDisk: string;
  /** Kernel command line of the image; the driver appends the per-VM words. */
  cmdline: string;
}

/** Everything needed to create a VM. */
export interface VmSpec {
  name: string;
  /** The agent id the guest announces; defaults to the VM name. */
  agentId?: string;
  memoryMiB?: number;
  cpus?: number;
  /** Required by drivers that boot an image (qemu); the process driver runs the agent on the host. */
  image?: BootImage;
  /** Host-side broker address the guest's agent connects to. */
  broker: { host: string; port: number };
  /** The controller's Ed25519 public key (base64 raw), so the agent accepts its commands. */
  controllerPublicKey: string;
  /** Guest TCP port to forward to a free port on the host loopback (the agent's data channel). */
  dataPort?: number;
  /** Use a saved, agent-ready template when the driver has one (default true). */
  fromTemplate?: boolean;
}

/** What `status` reports. */
export interface VmStatus {
  name: string;
  driver: DriverName;
  state: VmState;
  /** Why the state is what it is, when that is not obvious (`error`, forced stops...). */
  reason?: string;
  /** Host process of the VM when it runs. */
  pid?: number;
  /** How the guest executes: `kvm`, `tcg`, `process`... */
  accel?: string;
}

export interface SnapshotInfo {
  name: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  /** True when the snapshot holds the running machine (memory, devices), not just the disk. */
  withMemory: boolean;
  /** Bytes of saved machine state, when known. */
  vmStateBytes?: number;
}

/** What a driver can do (declared with the API, which reports it in the handshake). */
import type { DriverFeatures } from "@vmc/protocol/rpc";
export type { DriverFeatures };

export interface StopOptions {
  /** How long the guest gets to power off after the request before it is forced (default 10 s). */
  timeoutMs?: number;
  /** Skip the graceful request. */
  force?: boolean;
}

/**
 * Lifecycle. Idempotency:
 * - `create` throws AlreadyExists when the name is taken (a clash is the caller's mistake);
 *   a failed create leaves nothing behind;
 * - `start` of a running or paused VM, `stop` of a stopped one, `pause` of a paused one and
 *   `resume` of a running one return without doing anything;
 * - `delete` of a running VM throws InvalidState unless `force` (then it is killed first).
 */
export interface Lifecycle {
  create(spec: VmSpec): Promise<VmRecord>;
  start(name: string): Promise<VmStatus>;
  stop(name: string, options?: StopOptions): Promise<VmStatus>;
  pause(name: string): Promise<VmStatus>;
  resume(name: string): Promise<VmStatus>;
  delete(name: string, options?: { force?: boolean }): Promise<void>;
  status(name: string): Promise<VmStatus>;
}

/**
 * Snapshots. `take` of an existing name throws AlreadyExists; `restore` returns the VM in the
 * run state it had when the snapshot was taken (a memory snapshot of a running VM comes back
 * running); `delete` of an unknown snapshot throws UnknownSnapshot.
 */
export interface SnapshotManager {
  takeSnapshot(name: string, snapshot: string): Promise<SnapshotInfo>;
  restoreSnapshot(name: string, snapshot: string): Promise<VmStatus>;
  listSnapshots(name: string): Promise<SnapshotInfo[]>;
  deleteSnapshot(name: string, snapshot: string): Promise<void>;
}

export interface VmStateEvent {
  name: string;
  state: VmState;
  /** The hypervisor's own event name (QMP `STOP`, `RESUME`, `SHUTDOWN`..., or `exit`). */
  cause: string;
  /**
   * Why it shut down, where the hypervisor says (QMP `SHUTDOWN`'s reason): `guest-shutdown` or
   * `guest-reset` when the guest ended itself, `host-qmp-quit` when it was made to stop.
   */
  reason?: string;
  at: number;
}

export interface Disposable {
  dispose(): void;
}

/** State changes as events (QMP events, process exit), never polling. */
export interface StateEvents {
  watch(name: string, listener: (event: VmStateEvent) => void): Promise<Disposable>;
}

export interface Driver extends Lifecycle, SnapshotManager, StateEvents {
  readonly name: DriverName;
  readonly features: DriverFeatures;
}

/** A driver's registration: whether it can run here, and how to make one for a $VMC_HOME. */
export interface DriverFactory {
  readonly name: DriverName;
  available(): Promise<boolean>;
  create(home: string): Driver;
}
