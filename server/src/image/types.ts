/** The bootable guest image: what the hypervisor drivers consume. */

/**
 * A built, verified guest image in `$VMC_HOME/images/<id>/`. Every path is absolute.
 *
 * How to boot it (QEMU): `-kernel kernel -initrd initrd -append "<cmdline> vmc_id=... vmc_broker=... vmc_key=..."`,
 * `rootfs` attached read-only as the FIRST virtio-blk drive (`-drive file=rootfs,format=raw,if=none,id=ro,readonly=on
 * -device virtio-blk-pci,drive=ro`), a per-VM qcow2 overlay of `baseDisk` as the SECOND virtio-blk drive, one
 * virtio-net NIC on user-mode networking with the broker reachable at 10.0.2.100:61613 (guestfwd). The guest finds
 * the disks by their ext4 labels (`vmc-ro`, `vmc-state`), so order is a fallback only. See docs/GUEST.md.
 */
export interface GuestImage {
  /** Content hash of every input (debs, node, agent bundle, recipe files); the directory name. */
  id: string;
  /** `$VMC_HOME/images/<id>`. */
  dir: string;
  /** Linux kernel: an uncompressed PVH-bootable vmlinux built from Debian's source (image/kernel.ts), or Debian's binary kernel (PVH vmlinux or bzImage, image/pvh.ts). */
  kernel: string;
  /** Compressed initramfs (busybox, /init; the modules of a binary kernel). */
  initrd: string;
  /** Read-only ext4 disk shared by all VMs: Node, its libraries and the agent. Attach with `readonly=on`. */
  rootfs: string;
  /** Blank-state qcow2 (pre-formatted ext4, label `vmc-state`); VMs get their own overlay of it. Never write to it. */
  baseDisk: string;
  /** Base kernel command line (console, quiet, panic...); append the `vmc_*` words per VM. */
  cmdline: string;
  /** Version of the agent bundle inside `rootfs` (from dist/agent.mjs; "unknown" when it does not say). */
  agentVersion: string;
}

/** Options for {@link ensureGuestImage}. */
export interface EnsureGuestImageOptions {
  /** `$VMC_HOME`; default from the environment (server/src/config.ts). */
  home?: string;
  /** Rebuild even when a valid cached image exists. */
  force?: boolean;
  /** Agent bundle to put in the image instead of the checkout's dist/agent.mjs (tests). */
  agentBundle?: string;
  /** One line per build step, for progress output. */
  onProgress?: (msg: string) => void;
}
