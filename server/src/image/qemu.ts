/**
 * The reference QEMU command line for this image (TCG, q35, the system disk as virtio-pmem, a
 * virtio state disk and NIC, restricted user networking with the broker forwarded to
 * 10.0.2.100:61613). The boot check and the image tests use it; the QEMU driver may build its own
 * from the same rules (docs/GUEST.md).
 */
import { statSync } from "node:fs";
import { MACHINE_VERSION, rootfsPmemArgs, tcgCpu } from "../hypervisors/qemu/command";
import type { GuestImage } from "./types";

export interface GuestBootOptions {
  /** This VM's qcow2 overlay of `image.baseDisk`. */
  overlay: string;
  /** Host port of the broker on 127.0.0.1 the guest reaches as 10.0.2.100:61613. */
  brokerPort: number;
  qmpSocket: string;
  serialLog: string;
  /** Kernel words for the agent, e.g. `vmc_id=vm1 vmc_broker=stomp://10.0.2.100:61613`. */
  vmcWords: string;
  memoryMiB?: number;
  accel?: string;
}

export function guestQemuArgs(image: GuestImage, o: GuestBootOptions): string[] {
  const fwd = `guestfwd=tcp:10.0.2.100:61613-cmd:socat STDIO TCP:127.0.0.1:${o.brokerPort}`;
  return [
    "-machine", "q35", "-accel", o.accel ?? "tcg", "-cpu", tcgCpu(MACHINE_VERSION), "-smp", "1",
    // The system disk as virtio-pmem, which the guest mounts with DAX (the driver's layout 4 and later).
    ...rootfsPmemArgs(image.rootfs, statSync(image.rootfs).size, o.memoryMiB ?? 512),
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-bios", "qboot.rom",
    "-serial", `file:${o.serialLog}`, "-monitor", "none",
    "-qmp", `unix:${o.qmpSocket},server=on,wait=off`,
    "-kernel", image.kernel, "-initrd", image.initrd, "-append", `${image.cmdline} ${o.vmcWords}`,
    "-drive", `file=${o.overlay},format=qcow2,if=none,id=state,discard=unmap`, "-device", "virtio-blk-pci,drive=state",
    "-netdev", `user,id=n0,restrict=on,${fwd}`, "-device", "virtio-net-pci,netdev=n0,romfile=",
  ];
}
