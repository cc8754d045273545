/**
 * VBoxManage commands as data: each is `{ command, args, parse }`, so tests check the arguments
 * and the parsers without VirtualBox (in the manner of vscode-docker's runtime clients). A
 * separate runner ({@link ./runner}) executes them.
 */
import type { VmState } from "@vmc/protocol";

export interface VBoxCommand<T> {
  command: string;
  args: string[];
  parse: (stdout: string) => T;
}

export const VBOXMANAGE = process.env.VMC_VBOXMANAGE ?? "VBoxManage";

const none = (): void => undefined;
const cmd = <T>(args: string[], parse: (stdout: string) => T): VBoxCommand<T> => ({ command: VBOXMANAGE, args, parse });

/** `key=value` lines of `--machinereadable` output; quoted values unquoted (`\"` and `\\` unescaped). */
export function parseMachineReadable(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of stdout.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    let key = line.slice(0, eq);
    let value = line.slice(eq + 1);
    if (key.startsWith('"') && key.endsWith('"')) key = key.slice(1, -1);
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1).replace(/\\(["\\])/g, "$1");
    out.set(key, value);
  }
  return out;
}

/** VirtualBox's `VMState` → the one VmState. */
export function stateFromVBox(vmState: string | undefined): VmState {
  switch (vmState) {
    case "running":
      return "running";
    case "paused":
      return "paused";
    case "poweroff":
    case "aborted":
      return "stopped";
    case "saved":
      return "saved";
    case "starting":
    case "restoring":
      return "starting";
    case "stopping":
    case "saving":
      return "stopping";
    default:
      return "error";
  }
}

export interface VBoxVmInfo {
  name: string;
  uuid: string | undefined;
  state: VmState;
  vboxState: string;
  memoryMiB: number | undefined;
  cpus: number | undefined;
}

export interface VBoxSnapshot {
  name: string;
  uuid: string;
  description: string;
  /** True for the snapshot the current state is based on. */
  current: boolean;
}

/** `snapshot list --machinereadable`: SnapshotName[-1-2...]="..." / SnapshotUUID... / CurrentSnapshotUUID. */
export function parseSnapshotList(stdout: string): VBoxSnapshot[] {
  if (/does not have any snapshots/i.test(stdout)) return [];
  const kv = parseMachineReadable(stdout);
  const current = kv.get("CurrentSnapshotUUID");
  const out: VBoxSnapshot[] = [];
  for (const [key, name] of kv) {
    const m = /^SnapshotName(.*)$/.exec(key);
    if (!m) continue;
    const suffix = m[1] ?? "";
    const uuid = kv.get(`SnapshotUUID${suffix}`) ?? "";
    out.push({ name, uuid, description: kv.get(`SnapshotDescription${suffix}`) ?? "", current: uuid !== "" && uuid === current });
  }
  return out;
}

export const vbox = {
  version: () => cmd(["--version"], (s) => s.trim()),
  createVm: (name: string, baseFolder: string, osType = "Linux_64") =>
    cmd(["createvm", "--name", name, "--basefolder", baseFolder, "--ostype", osType, "--register"], (s) => /UUID:\s*([0-9a-f-]+)/i.exec(s)?.[1]),
  modifyVm: (name: string, o: { memoryMiB: number; cpus: number }) =>
    cmd(["modifyvm", name, "--memory", String(o.memoryMiB), "--cpus", String(o.cpus), "--acpi", "on", "--nic1", "nat", "--audio-driver", "none", "--graphicscontroller", "vmsvga"], none),
  /** A linked clone of a base VM's snapshot: shares its disks through differencing images. */
  cloneVm: (base: string, snapshot: string, name: string, baseFolder: string) =>
    cmd(["clonevm", base, "--snapshot", snapshot, "--options", "link", "--name", name, "--basefolder", baseFolder, "--register"], none),
  /** The agent's broker address, id and controller key, read in the guest as guest properties. */
  setGuestProperty: (name: string, key: string, value: string) => cmd(["guestproperty", "set", name, key, value], none),
  /** NAT rule so the guest reaches the host broker: guest 10.0.2.2 is the host; a port forward for the data channel. */
  natForward: (name: string, rule: string) => cmd(["modifyvm", name, "--natpf1", rule], none),
  start: (name: string) => cmd(["startvm", name, "--type", "headless"], none),
  control: (name: string, action: "pause" | "resume" | "savestate" | "acpipowerbutton" | "poweroff") => cmd(["controlvm", name, action], none),
  showVmInfo: (name: string) =>
    cmd(["showvminfo", name, "--machinereadable"], (s): VBoxVmInfo => {
      const kv = parseMachineReadable(s);
      const vboxState = kv.get("VMState") ?? "unknown";
      const memory = kv.get("memory");
      const cpus = kv.get("cpus");
      return { name: kv.get("name") ?? name, uuid: kv.get("UUID"), state: stateFromVBox(vboxState), vboxState, memoryMiB: memory ? Number(memory) : undefined, cpus: cpus ? Number(cpus) : undefined };
    }),
  snapshotTake: (name: string, snapshot: string, live = false) => cmd(["snapshot", name, "take", snapshot, ...(live ? ["--live"] : [])], none),
  snapshotRestore: (name: string, snapshot: string) => cmd(["snapshot", name, "restore", snapshot], none),
  snapshotDelete: (name: string, snapshot: string) => cmd(["snapshot", name, "delete", snapshot], none),
  snapshotList: (name: string) => cmd(["snapshot", name, "list", "--machinereadable"], parseSnapshotList),
  unregister: (name: string) => cmd(["unregistervm", name, "--delete"], none),
};

/** VBoxManage's messages when another session holds the VM's lock: retry with backoff. */
export function isSessionLockError(stderr: string): boolean {
  return /already locked|is locked|VBOX_E_INVALID_OBJECT_STATE|session.*(busy|lock)|E_ACCESSDENIED/i.test(stderr);
}

/** VBoxManage's message for an unknown VM name. */
export function isUnknownVmError(stderr: string): boolean {
  return /Could not find a registered machine|VBOX_E_OBJECT_NOT_FOUND/i.test(stderr);
}
