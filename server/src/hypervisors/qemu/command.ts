/** Builds the qemu-system-x86_64 command line of a VM: pure, so tests check it without QEMU. */

export type Accel = "kvm" | "tcg";

/** Where the guest reaches the broker: slirp forwards this address to the host broker port. */
export const GUEST_BROKER_ADDRESS = "10.0.2.100:61613";
export const IDENTITY_PORT_NAME = "vmc.identity";

export interface QemuLaunch {
  name: string;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  kernel: string;
  initrd: string;
  append: string;
  /** Read-only root file system (raw ext4; opened read-only). */
  rootfs: string;
  /** Its size in bytes: from machine version 4 it is mapped whole into the guest (a 2 MiB multiple). */
  rootfsBytes?: number;
  /** The VM's own qcow2 overlay. */
  disk: string;
  qmpSocket: string;
  eventsSocket: string;
  identitySocket: string;
  consoleLog: string;
  pidFile: string;
  /** Host-side broker address (normally 127.0.0.1). */
  brokerHost?: string;
  brokerPort: number;
  forwards: { guestPort: number; hostPort: number }[];
  /** Migration source to start from (a template's saved state), e.g. `exec:cat /path`. */
  incoming?: string;
  /** Internal snapshot to start from. */
  loadvm?: string;
  /**
   * Machine layout version (see MACHINE_VERSION). Saved machine state only loads into the same
   * layout, so a VM keeps the version it was created with.
   */
  machine?: number;
  /**
   * Guest RAM from a file instead of anonymous memory: `share` true writes the guest's RAM into the
   * file (a template being built), false maps it copy-on-write (a clone of that template).
   */
  ramFile?: { path: string; share: boolean };
}

/**
 * Version 2 drops the NIC's iPXE option ROM (the firmware would load and run it at every boot;
 * the kernel is booted directly). Version 3 starts qboot, QEMU's minimal firmware, instead of
 * SeaBIOS: it only loads the kernel and the ACPI tables, ~0.15-0.3 s sooner under TCG. Version 4
 * maps the read-only system disk into the guest as virtio-pmem instead of a virtio disk
 * ({@link ROOTFS_PMEM}). Version 5 gives a TCG guest a CPU without ERMS ({@link tcgCpu}). Version 1
 * (no field) is the layout of VMs made before.
 */
export const MACHINE_VERSION = 5;

/**
 * The machine layout from which the read-only system disk is a virtio-pmem device: the image file
 * mapped shared and read-only, which the guest mounts with DAX. Node's binary then runs straight
 * from the host's page cache, one copy for all VMs: no disk reads, and no guest page cache to fill
 * (~55 MiB less guest RAM touched per boot, so less RSS and snapshot state). Guest writes to it are
 * discarded (QEMU treats a read-only file backend as ROM), and QEMU 7.2 leaves a virtio-pmem
 * device's memory out of machine state, as it did the read-only drive: test/vm/qemu-lifecycle
 * checks both. The file's size must be a 2 MiB multiple (the image build pads it).
 */
export const ROOTFS_PMEM = 4;

/** The machine layout from which a TCG guest's CPU model lacks ERMS ({@link tcgCpu}). */
const TCG_CPU_NO_ERMS = 5;

/**
 * The CPU model of a TCG guest on machine layout `machine`: QEMU's `max`, from version 5 without
 * ERMS ("fast rep movsb/stosb"). With ERMS the guest kernel clears every page, and glibc copies
 * and fills large blocks, by byte-wise `rep movsb`/`rep stosb`, which TCG runs one byte per
 * iteration (~1.7 ns a byte under qemu-user, against ~0.15 for `rep stosq`); without it the kernel
 * takes its `rep stosq`/`movsq` routines and glibc its vector loops (~0.1 s less to HELLO,
 * docs/BENCHMARKS.md). V8 does not use ERMS, so the agent's startup snapshot loads either way.
 */
export function tcgCpu(machine: number): string {
  return machine >= TCG_CPU_NO_ERMS ? "max,-erms" : "max";
}

/** Memory devices (the system disk as virtio-pmem) are placed in 2 MiB steps. */
export const PMEM_ALIGN = 2 << 20;

/** The layout for a new VM whose system disk has this size: images built before the pmem layout may not be aligned. */
export function machineFor(rootfsBytes: number): number {
  return rootfsBytes > 0 && rootfsBytes % PMEM_ALIGN === 0 ? MACHINE_VERSION : ROOTFS_PMEM - 1;
}

/**
 * The system disk as virtio-pmem ({@link ROOTFS_PMEM}): its file mapped shared and read-only, in a
 * memory slot above the RAM (one slot, maxmem = RAM + the file's size). Also the image's reference
 * command line (server/src/image/qemu.ts).
 */
export function rootfsPmemArgs(rootfs: string, rootfsBytes: number, memoryMiB: number): string[] {
  return [
    "-m", `${memoryMiB}M,slots=1,maxmem=${memoryMiB + Math.ceil(rootfsBytes / (1 << 20))}M`,
    "-object", `memory-backend-file,id=rootfs,mem-path=${escapeOpt(rootfs)},size=${rootfsBytes},share=on,readonly=on,dump=off`,
    "-device", "virtio-pmem-pci,memdev=rootfs",
  ];
}

/** The per-VM words appended to the image's kernel command line (read by the agent). */
export function identityWords(agentId: string, controllerPublicKey: string): string {
  return `vmc_id=${agentId} vmc_broker=stomp://${GUEST_BROKER_ADDRESS} vmc_key=${controllerPublicKey}`;
}

export function netdevOption(brokerPort: number, forwards: QemuLaunch["forwards"], brokerHost = "127.0.0.1"): string {
  const parts = [
    "user",
    "id=n0",
    // restrict=on: the guest reaches nothing but the forwards below.
    "restrict=on",
    // cmd: starts one socat per guest connection, so the agent can reconnect (tcp: connects once).
    `guestfwd=tcp:${GUEST_BROKER_ADDRESS}-cmd:socat STDIO TCP:${brokerHost}:${brokerPort}`,
    ...forwards.map((f) => `hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`),
  ];
  return parts.join(",");
}

export function qemuArgs(l: QemuLaunch): string[] {
  const pmem = (l.machine ?? 1) >= ROOTFS_PMEM;
  const rootfsBytes = l.rootfsBytes ?? 0;
  if (pmem && (rootfsBytes <= 0 || rootfsBytes % PMEM_ALIGN !== 0)) {
    throw new Error(`machine layout ${l.machine} maps the system disk ${l.rootfs} whole: its size (${rootfsBytes} bytes) must be a positive multiple of 2 MiB`);
  }
  const args = [
    "-name", `vmc-${l.name}`,
    "-machine", "q35",
    // tb-size: TCG's translation cache, 1 GiB by default, all of it resident once filled. A cold boot
    // to HELLO translates ~85 MB of code: at 64 MiB the cache was flushed midway and Node's start
    // translated again (~0.25 s). 128 MiB holds a boot and caps an idle VM's RSS near 320 MiB.
    ...(l.accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", "tcg,tb-size=128", "-cpu", tcgCpu(l.machine ?? 1)]),
    ...(pmem ? rootfsPmemArgs(l.rootfs, rootfsBytes, l.memoryMiB) : ["-m", String(l.memoryMiB)]),
    // Same backend id as QEMU's default RAM ("pc.ram"), so machine state moves between both kinds.
    ...(l.ramFile
      ? ["-object", `memory-backend-file,id=pc.ram,size=${l.memoryMiB}M,mem-path=${escapeOpt(l.ramFile.path)},share=${l.ramFile.share ? "on" : "off"}`, "-machine", "memory-backend=pc.ram"]
      : []),
    "-smp", String(l.cpus),
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    // A bare name: QEMU looks in its own data directory (Debian's qemu-system-data ships it).
    ...((l.machine ?? 1) >= 3 ? ["-bios", "qboot.rom"] : []),
    "-kernel", l.kernel,
    "-initrd", l.initrd,
    "-append", l.append,
    ...(pmem ? [] : ["-drive", `file=${escapeOpt(l.rootfs)},if=none,id=rootfs,format=raw,readonly=on`, "-device", "virtio-blk-pci,drive=rootfs"]),
    // cache=unsafe: no flushes (savevm of a 512 MiB guest in ~0.15 s instead of seconds). The price:
    // a host crash can lose or corrupt the overlay; VMs are disposable compute (docs/HYPERVISORS.md).
    "-drive", `file=${escapeOpt(l.disk)},if=none,id=disk,format=qcow2,discard=unmap,cache=unsafe`,
    "-device", "virtio-blk-pci,drive=disk",
    "-netdev", netdevOption(l.brokerPort, l.forwards, l.brokerHost),
    "-device", (l.machine ?? 1) >= 2 ? "virtio-net-pci,netdev=n0,romfile=" : "virtio-net-pci,netdev=n0",
    "-device", "virtio-serial-pci,id=vser0",
    "-chardev", `socket,id=ident,path=${escapeOpt(l.identitySocket)},server=on,wait=off`,
    "-device", `virtserialport,bus=vser0.0,chardev=ident,name=${IDENTITY_PORT_NAME}`,
    "-chardev", `file,id=con0,path=${escapeOpt(l.consoleLog)}`,
    "-serial", "chardev:con0",
    "-qmp", `unix:${escapeOpt(l.qmpSocket)},server=on,wait=off`,
    "-qmp", `unix:${escapeOpt(l.eventsSocket)},server=on,wait=off`,
    "-pidfile", l.pidFile,
    "-daemonize",
  ];
  if (l.incoming) args.push("-incoming", l.incoming);
  if (l.loadvm) args.push("-loadvm", l.loadvm);
  return args;
}

/** QEMU option values escape a comma by doubling it. */
function escapeOpt(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * The VM disk's qcow2 layout. savevm writes ~110 MiB of machine state in pieces of tens of KiB, and
 * after a restore every cluster of that area is shared with the restored snapshot, so the first
 * write into each one copies it. With 64 KiB clusters that was ~1,800 copies, and the first take
 * after a restore cost twice the others; 512 KiB clusters make it ~220 and every take cheaper.
 * Extended L2 entries keep guest writes allocating in 16 KiB subclusters. docs/HYPERVISORS.md.
 */
export const OVERLAY_OPTIONS = "cluster_size=512K,extended_l2=on";

/** `qemu-img create` of a linked clone: a qcow2 overlay whose backing file is `base`. */
export function overlayArgs(base: string, overlay: string): string[] {
  return ["create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTIONS, "-F", "qcow2", "-b", base, overlay];
}
