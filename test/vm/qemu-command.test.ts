/**
 * The QEMU command line per machine layout (server/src/hypervisors/qemu/command.ts): saved machine
 * state only loads into the layout it was saved from, so each version must keep its firmware and
 * ROMs, and a VM made before a change must get the command line it was made with.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MACHINE_VERSION, qemuArgs, type QemuLaunch } from "@vmc/server/hypervisors/qemu/command";

const launch: QemuLaunch = {
  name: "vm1", memoryMiB: 512, cpus: 1, accel: "tcg", kernel: "/i/kernel", initrd: "/i/initrd", append: "console=ttyS0",
  rootfs: "/i/rootfs.img", disk: "/v/disk.qcow2", qmpSocket: "/v/qmp.sock", eventsSocket: "/v/events.sock",
  identitySocket: "/v/identity.sock", consoleLog: "/v/console.log", pidFile: "/v/qemu.pid", brokerPort: 61613, forwards: [],
};
const firmware = (args: string[]) => (args.includes("-bios") ? args[args.indexOf("-bios") + 1] : "SeaBIOS");
const nic = (args: string[]) => args.find((a) => a.startsWith("virtio-net-pci"));

test("each machine layout keeps its firmware and NIC ROM; new VMs get the newest", () => {
  assert.equal(MACHINE_VERSION, 3);
  const v1 = qemuArgs({ ...launch });
  const v2 = qemuArgs({ ...launch, machine: 2 });
  const v3 = qemuArgs({ ...launch, machine: MACHINE_VERSION });
  assert.deepEqual([firmware(v1), nic(v1)], ["SeaBIOS", "virtio-net-pci,netdev=n0"]);
  assert.deepEqual([firmware(v2), nic(v2)], ["SeaBIOS", "virtio-net-pci,netdev=n0,romfile="]);
  assert.deepEqual([firmware(v3), nic(v3)], ["qboot.rom", "virtio-net-pci,netdev=n0,romfile="]);
});
