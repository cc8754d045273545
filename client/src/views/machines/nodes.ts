import type { AgentInfo, SnapshotInfo, VmInfo } from "@vmc/protocol/rpc";

/** The rows of the Machines view. */
export type MachineNode =
  | { kind: "machine"; vm: VmInfo }
  | { kind: "machineAgent"; vm: string; agentId: string }
  | { kind: "snapshots"; vm: string }
  | { kind: "snapshot"; vm: string; snapshot: SnapshotInfo }
  | { kind: "files"; vm: string }
  | { kind: "guestEntry"; vm: string; path: string; type: "file" | "directory" | "symlink" | "other" }
  | { kind: "message"; text: string };

export type AgentLookup = (agentId: string) => AgentInfo | undefined;

/** The machine a node belongs to, if any (commands accept any row of a machine). */
export function machineOf(node: MachineNode): string | undefined {
  switch (node.kind) {
    case "machine":
      return node.vm.name;
    case "message":
      return undefined;
    default:
      return node.vm;
  }
}

export function joinGuestPath(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}
