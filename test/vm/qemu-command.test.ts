/**
 * The QEMU command line per machine layout (server/src/hypervisors/qemu/command.ts): saved machine
 * state only loads into the layout it was saved from, so each version must keep its firmware and
 * ROMs, and a VM made before a change must get the command line it was made with.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MACHINE_VERSION, machineFor, qemuArgs, type QemuLaunch } from "@vmc/server/hypervisors/qemu/command";

const launch: QemuLaunch = {
  name: "vm1", memoryMiB: 512, cpus: 1, accel: "tcg", kernel: "/i/kernel", initrd: "/i/initrd", append: "console=ttyS0",
  rootfs: "/i/rootfs.img", disk: "/v/disk.qcow2", qmpSocket: "/v/qmp.sock", eventsSocket: "/v/events.sock",
  identitySocket: "/v/identity.sock", consoleLog: "/v/console.log", pidFile: "/v/qemu.pid", brokerPort: 61613, forwards: [],
};
const firmware = (args: string[]) => (args.includes("-bios") ? args[args.indexOf("-bios") + 1] : "SeaBIOS");
const nic = (args: string[]) => args.find((a) => a.startsWith("virtio-net-pci"));

const after = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

test("each machine layout keeps its firmware, NIC ROM, system disk and CPU; new VMs get the newest", () => {
  assert.equal(MACHINE_VERSION, 5);
  const v1 = qemuArgs({ ...launch });
  const v2 = qemuArgs({ ...launch, machine: 2 });
  const v3 = qemuArgs({ ...launch, machine: 3 });
  const v4 = qemuArgs({ ...launch, machine: 4, rootfsBytes: 144 << 20 });
  const v5 = qemuArgs({ ...launch, machine: 5, rootfsBytes: 144 << 20 });
  assert.deepEqual([firmware(v1), nic(v1)], ["SeaBIOS", "virtio-net-pci,netdev=n0"]);
  assert.deepEqual([firmware(v2), nic(v2)], ["SeaBIOS", "virtio-net-pci,netdev=n0,romfile="]);
  assert.deepEqual([firmware(v3), nic(v3)], ["qboot.rom", "virtio-net-pci,netdev=n0,romfile="]);
  assert.deepEqual([firmware(v4), nic(v4)], ["qboot.rom", "virtio-net-pci,netdev=n0,romfile="]);
  assert.deepEqual([firmware(v5), nic(v5)], ["qboot.rom", "virtio-net-pci,netdev=n0,romfile="]);
  // Up to 3 the system disk is a read-only virtio disk; from 4 the file mapped as virtio-pmem.
  for (const v of [v1, v2, v3]) {
    assert.ok(after(v, "-drive").some((d) => d.startsWith("file=/i/rootfs.img,") && d.includes("readonly=on")));
    assert.deepEqual(after(v, "-m"), ["512"]);
  }
  for (const v of [v4, v5]) {
    assert.ok(!after(v, "-drive").some((d) => d.includes("rootfs.img")));
    assert.deepEqual(after(v, "-object").filter((o) => o.includes("rootfs.img")), [
      `memory-backend-file,id=rootfs,mem-path=/i/rootfs.img,size=${144 << 20},share=on,readonly=on,dump=off`,
    ]);
    assert.ok(after(v, "-device").includes("virtio-pmem-pci,memdev=rootfs"));
    assert.deepEqual(after(v, "-m"), ["512M,slots=1,maxmem=656M"]);
  }
  // Up to 4 a TCG guest gets QEMU's max model; from 5 without ERMS. KVM guests get the host's.
  for (const v of [v1, v2, v3, v4]) assert.deepEqual(after(v, "-cpu"), ["max"]);
  assert.deepEqual(after(v5, "-cpu"), ["max,-erms"]);
  assert.deepEqual(after(qemuArgs({ ...launch, machine: 5, rootfsBytes: 144 << 20, accel: "kvm" }), "-cpu"), ["host"]);
});

test("the pmem layout needs the system disk's size in whole 2 MiB steps", () => {
  assert.throws(() => qemuArgs({ ...launch, machine: 4 }), /must be a positive multiple of 2 MiB/);
  assert.throws(() => qemuArgs({ ...launch, machine: 4, rootfsBytes: (144 << 20) + 4096 }), /multiple of 2 MiB/);
  // An image built before the padding gets the virtio disk layout.
  assert.equal(machineFor(144 << 20), 5);
  assert.equal(machineFor((144 << 20) + 4096), 3);
});
