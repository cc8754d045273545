/**
 * The VirtualBox driver without VirtualBox: command lines as data, parsers on fixtures written
 * from the documented formats (test/vm/fixtures/virtualbox/README.md says why they are not live
 * captures), session-lock retries with backoff, and the driver's calls through a recording runner.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { VmcErrorCodes } from "@vmc/protocol";
import { isSessionLockError, isUnknownVmError, parseMachineReadable, parseSnapshotList, vbox } from "@vmc/server/hypervisors/virtualbox/commands";
import { runVBox, VirtualBoxDriver } from "@vmc/server/hypervisors/virtualbox/driver";
import type { RunResult } from "@vmc/server/hypervisors/qemu/exec";
import { removeHome, tempHome } from "./harness";

const fixture = (name: string) => readFileSync(join(import.meta.dirname, "fixtures", "virtualbox", name), "utf8");

describe("VirtualBox commands", () => {
  it("builds the documented VBoxManage argument lists", () => {
    assert.deepEqual(vbox.cloneVm("vmc-base-vm", "vmc-base", "vmc-w1", "/h/vms/w1/vbox").args, ["clonevm", "vmc-base-vm", "--snapshot", "vmc-base", "--options", "link", "--name", "vmc-w1", "--basefolder", "/h/vms/w1/vbox", "--register"]);
    assert.deepEqual(vbox.start("vmc-w1").args, ["startvm", "vmc-w1", "--type", "headless"]);
    for (const action of ["pause", "resume", "savestate", "acpipowerbutton", "poweroff"] as const) {
      assert.deepEqual(vbox.control("vmc-w1", action).args, ["controlvm", "vmc-w1", action]);
    }
    assert.deepEqual(vbox.snapshotTake("vmc-w1", "c1").args, ["snapshot", "vmc-w1", "take", "c1"]);
    assert.deepEqual(vbox.snapshotRestore("vmc-w1", "c1").args, ["snapshot", "vmc-w1", "restore", "c1"]);
    assert.deepEqual(vbox.snapshotDelete("vmc-w1", "c1").args, ["snapshot", "vmc-w1", "delete", "c1"]);
    assert.deepEqual(vbox.snapshotList("vmc-w1").args, ["snapshot", "vmc-w1", "list", "--machinereadable"]);
    assert.deepEqual(vbox.showVmInfo("vmc-w1").args, ["showvminfo", "vmc-w1", "--machinereadable"]);
    assert.equal(vbox.start("x").command, process.env.VMC_VBOXMANAGE ?? "VBoxManage");
  });

  it("parses showvminfo --machinereadable", () => {
    const running = vbox.showVmInfo("vmc-worker1").parse(fixture("showvminfo-running.txt"));
    assert.deepEqual(running, { name: "vmc-worker1", uuid: "5c1f6a3e-8a2d-4f1e-9b7e-2f6c1f0d9a11", state: "running", vboxState: "running", memoryMiB: 512, cpus: 2 });
    const saved = vbox.showVmInfo("vmc-worker1").parse(fixture("showvminfo-saved.txt"));
    assert.equal(saved.state, "saved");
    assert.equal(saved.memoryMiB, 1024);
    assert.equal(parseMachineReadable(fixture("showvminfo-running.txt")).get("SATA-0-0")?.endsWith(".vdi"), true, "quoted keys");
  });

  it("parses snapshot lists, nested and empty", () => {
    const list = parseSnapshotList(fixture("snapshot-list.txt"));
    assert.deepEqual(list.map((s) => [s.name, s.current]), [["base", false], ['checkpoint "one"', false], ["checkpoint-2", true]]);
    assert.equal(list[2]!.description, "after step 2");
    assert.deepEqual(parseSnapshotList(fixture("snapshot-list-empty.txt")), []);
  });

  it("recognises session-lock and unknown-VM errors", () => {
    assert.equal(isSessionLockError(fixture("session-locked.txt")), true);
    assert.equal(isSessionLockError(fixture("unknown-vm.txt")), false);
    assert.equal(isUnknownVmError(fixture("unknown-vm.txt")), true);
  });

  it("retries session-lock errors with growing delays, then gives a typed error", async () => {
    const delays: number[] = [];
    let calls = 0;
    const locked: RunResult = { code: 1, signal: null, stdout: "", stderr: fixture("session-locked.txt") };
    const flaky = async (): Promise<RunResult> => (++calls < 3 ? locked : { code: 0, signal: null, stdout: fixture("showvminfo-running.txt"), stderr: "" });
    const info = await runVBox(vbox.showVmInfo("vmc-worker1"), "status", flaky, async (ms) => void delays.push(ms));
    assert.equal(info.state, "running");
    assert.equal(calls, 3);
    assert.deepEqual(delays, [100, 200]);

    delays.length = 0;
    await assert.rejects(
      runVBox(vbox.control("vmc-worker1", "pause"), "pause", async () => locked, async (ms) => void delays.push(ms)),
      (e: { code?: number; message?: string }) => e.code === VmcErrorCodes.HypervisorFailed && /already locked/.test(e.message ?? ""),
    );
    assert.deepEqual(delays, [100, 200, 400, 800, 1600]);
    await assert.rejects(
      runVBox(vbox.showVmInfo("vmc-nosuch"), "status", async () => ({ code: 1, signal: null, stdout: "", stderr: fixture("unknown-vm.txt") })),
      (e: { code?: number }) => e.code === VmcErrorCodes.UnknownVm,
    );
  });

  it("the driver pauses around a snapshot and refuses a stopped VM's pause with its state", async () => {
    const home = tempHome();
    try {
      const calls: string[][] = [];
      let state = "running";
      const snapshots: string[] = [];
      const exec = async (_c: string, args: string[]): Promise<RunResult> => {
        calls.push(args);
        const ok = (stdout = ""): RunResult => ({ code: 0, signal: null, stdout, stderr: "" });
        if (args[0] === "showvminfo") return ok(`name="${args[1]}"\nVMState="${state}"\n`);
        if (args[0] === "controlvm") state = args[2] === "pause" ? "paused" : args[2] === "resume" ? "running" : args[2] === "poweroff" ? "poweroff" : state;
        if (args[0] === "snapshot" && args[2] === "list") return ok(snapshots.length ? snapshots.map((s, i) => `SnapshotName${i ? `-${i}` : ""}="${s}"\nSnapshotUUID${i ? `-${i}` : ""}="u${i}"`).join("\n") : "This machine does not have any snapshots");
        if (args[0] === "snapshot" && args[2] === "take") snapshots.push(args[3]!);
        return ok();
      };
      const d = new VirtualBoxDriver(home, exec);
      await d.create({ name: "w1", image: { id: "base-vm", kernel: "", initrd: "", rootfs: "", baseDisk: "", cmdline: "" }, broker: { host: "127.0.0.1", port: 61613 }, controllerPublicKey: "K" });
      assert.deepEqual(calls[0], ["clonevm", "base-vm", "--snapshot", "vmc-base", "--options", "link", "--name", "vmc-w1", "--basefolder", join(home, "vms", "w1", "vbox"), "--register"]);
      assert.ok(calls.some((a) => a.join(" ") === "guestproperty set vmc-w1 /vmc/id w1"));
      calls.length = 0;
      await d.takeSnapshot("w1", "c1");
      const verbs = calls.filter((a) => a[0] !== "showvminfo" && !(a[0] === "snapshot" && a[2] === "list")).map((a) => a.slice(0, 3).join(" "));
      assert.deepEqual(verbs, ["controlvm vmc-w1 pause", "snapshot vmc-w1 take", "controlvm vmc-w1 resume"]);
      assert.equal(state, "running");
      await assert.rejects(d.takeSnapshot("w1", "c1"), (e: { code?: number }) => e.code === VmcErrorCodes.AlreadyExists);
      state = "poweroff";
      await assert.rejects(d.pause("w1"), (e: { code?: number; data?: { state?: string } }) => e.code === VmcErrorCodes.InvalidState && e.data?.state === "stopped");
    } finally {
      removeHome(home);
    }
  });
});
