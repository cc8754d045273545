/**
 * The VirtualBox driver, built on the VBoxManage command builders in ./commands. NOT YET RUN
 * AGAINST A LIVE VIRTUALBOX (it cannot be installed on the machines this was written on): the
 * command lines and parsers are unit-tested against documented output formats only.
 *
 * A VM is a linked clone (`clonevm --options link`) of a registered base VM's snapshot, named
 * `vmc-<name>`, under `$VMC_HOME/vms/<name>/vbox/`. Per-VM settings reach the guest as guest
 * properties under `/vmc/` (`/vmc/id`, `/vmc/broker`, `/vmc/key`).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VmcError, VmcErrorCodes } from "@vmc/protocol";
import { VmStore, type VmRecord } from "../../store/vms";
import type { Disposable, Driver, DriverFactory, DriverFeatures, SnapshotInfo, StopOptions, VmSpec, VmStateEvent, VmStatus } from "../driver";
import { alreadyExists, hypervisorFailed, invalidState, unknownSnapshot } from "../errors";
import { run } from "../qemu/exec";
import { isSessionLockError, isUnknownVmError, vbox, VBOXMANAGE, type VBoxCommand } from "./commands";

/** Runs a command, retrying session-lock errors with backoff (100 ms doubling, 6 tries). */
export async function runVBox<T>(c: VBoxCommand<T>, operation: string, exec = run, pause: (ms: number) => Promise<unknown> = sleep): Promise<T> {
  let delay = 100;
  for (let attempt = 1; ; attempt++) {
    let r;
    try {
      r = await exec(c.command, c.args, 120_000);
    } catch (err) {
      throw hypervisorFailed("virtualbox", operation, `cannot run ${c.command}: ${(err as Error).message}`);
    }
    if (r.code === 0) return c.parse(r.stdout);
    if (isSessionLockError(r.stderr) && attempt < 6) {
      await pause(delay);
      delay *= 2;
      continue;
    }
    if (isUnknownVmError(r.stderr)) throw new VmcError(VmcErrorCodes.UnknownVm, `${operation}: VirtualBox does not know the VM (${r.stderr.trim()})`, {});
    throw hypervisorFailed("virtualbox", operation, r.stderr.trim() || `VBoxManage exited with ${r.code}`);
  }
}

/** Name of the VirtualBox machine behind a vmc VM. */
export const vboxName = (name: string) => `vmc-${name}`;

export class VirtualBoxDriver implements Driver {
  readonly name = "virtualbox" as const;
  readonly features: DriverFeatures = {
    pause: true,
    snapshots: true,
    snapshotsWithMemory: true,
    templates: false,
    gracefulStop: true,
    isolation: "vm",
  };
  readonly store: VmStore;

  constructor(
    readonly home: string,
    private readonly exec = run,
  ) {
    this.store = new VmStore(home);
  }

  private vb<T>(c: VBoxCommand<T>, operation: string): Promise<T> {
    return runVBox(c, operation, this.exec);
  }

  /** `spec.image.id` names the registered base VM; its snapshot `vmc-base` is what clones link to. */
  async create(spec: VmSpec): Promise<VmRecord> {
    if (!spec.image) throw new VmcError(VmcErrorCodes.ImageMissing, "the virtualbox driver needs a base VM (image id = its registered name, with a snapshot 'vmc-base')", {});
    if (this.store.exists(spec.name)) throw alreadyExists(spec.name);
    const image = spec.image;
    const memoryMiB = spec.memoryMiB ?? 512;
    const cpus = spec.cpus ?? 1;
    const agentId = spec.agentId ?? spec.name;
    return this.store.create(spec.name, async (dir) => {
      const folder = join(this.store.dir(spec.name), "vbox");
      mkdirSync(join(dir, "vbox"), { recursive: true });
      const vm = vboxName(spec.name);
      await this.vb(vbox.cloneVm(image.id, "vmc-base", vm, folder), `create VM '${spec.name}'`);
      try {
        await this.vb(vbox.modifyVm(vm, { memoryMiB, cpus }), `configure VM '${spec.name}'`);
        await this.vb(vbox.setGuestProperty(vm, "/vmc/id", agentId), `configure VM '${spec.name}'`);
        await this.vb(vbox.setGuestProperty(vm, "/vmc/broker", `stomp://10.0.2.2:${spec.broker.port}`), `configure VM '${spec.name}'`);
        await this.vb(vbox.setGuestProperty(vm, "/vmc/key", spec.controllerPublicKey), `configure VM '${spec.name}'`);
      } catch (err) {
        await this.vb(vbox.unregister(vm), "clean up").catch(() => undefined);
        throw err;
      }
      return {
        name: spec.name, driver: "virtualbox", agentId, memoryMiB, cpus, createdAt: Date.now(), broker: spec.broker,
        controllerPublicKey: spec.controllerPublicKey, forwards: [], started: false, driverData: { vboxName: vm, base: image.id },
      };
    });
  }

  async status(name: string): Promise<VmStatus> {
    this.store.read(name);
    try {
      const info = await this.vb(vbox.showVmInfo(vboxName(name)), `status of VM '${name}'`);
      return { name, driver: this.name, state: info.state, accel: "virtualbox", ...(info.vboxState === "aborted" ? { reason: "VirtualBox aborted the VM" } : {}) };
    } catch (err) {
      if (err instanceof VmcError && err.code === VmcErrorCodes.UnknownVm) return { name, driver: this.name, state: "error", reason: "not registered in VirtualBox" };
      throw err;
    }
  }

  async start(name: string): Promise<VmStatus> {
    const s = await this.status(name);
    if (s.state === "running" || s.state === "paused") return s;
    await this.vb(vbox.start(vboxName(name)), `start VM '${name}'`);
    return this.status(name);
  }

  async stop(name: string, options: StopOptions = {}): Promise<VmStatus> {
    let s = await this.status(name);
    if (s.state === "stopped") return s;
    if (s.state === "saved") {
      await this.vb(vbox.start(vboxName(name)), `stop VM '${name}'`);
    }
    if (!options.force) {
      await this.vb(vbox.control(vboxName(name), "acpipowerbutton"), `stop VM '${name}'`).catch(() => undefined);
      const deadline = Date.now() + (options.timeoutMs ?? 10_000);
      // VBoxManage has no event stream without the API: a bounded poll of its state.
      while (Date.now() < deadline && (s = await this.status(name)).state !== "stopped") await sleep(250);
    }
    if ((await this.status(name)).state !== "stopped") await this.vb(vbox.control(vboxName(name), "poweroff"), `stop VM '${name}'`);
    return this.status(name);
  }

  async pause(name: string): Promise<VmStatus> {
    const s = await this.status(name);
    if (s.state === "paused") return s;
    if (s.state !== "running") throw invalidState(name, "pause", s.state, ["running"]);
    await this.vb(vbox.control(vboxName(name), "pause"), `pause VM '${name}'`);
    return { ...s, state: "paused" };
  }

  async resume(name: string): Promise<VmStatus> {
    const s = await this.status(name);
    if (s.state === "running") return s;
    if (s.state !== "paused") throw invalidState(name, "resume", s.state, ["paused"]);
    await this.vb(vbox.control(vboxName(name), "resume"), `resume VM '${name}'`);
    return { ...s, state: "running" };
  }

  async delete(name: string, options: { force?: boolean } = {}): Promise<void> {
    const s = await this.status(name);
    if (s.state !== "stopped" && s.state !== "error") {
      if (!options.force) throw invalidState(name, "delete", s.state, ["stopped"]);
      await this.vb(vbox.control(vboxName(name), "poweroff"), `delete VM '${name}'`).catch(() => undefined);
    }
    await this.vb(vbox.unregister(vboxName(name)), `delete VM '${name}'`).catch((err: unknown) => {
      if (!(err instanceof VmcError && err.code === VmcErrorCodes.UnknownVm)) throw err;
    });
    this.store.remove(name);
  }

  async listSnapshots(name: string): Promise<SnapshotInfo[]> {
    this.store.read(name);
    const list = await this.vb(vbox.snapshotList(vboxName(name)), `list snapshots of VM '${name}'`);
    return list.map((s) => ({ name: s.name, createdAt: 0, withMemory: true }));
  }

  /** A running VM is paused around the snapshot (the 2010 lesson), so memory and disks agree. */
  async takeSnapshot(name: string, snapshot: string): Promise<SnapshotInfo> {
    if ((await this.listSnapshots(name)).some((s) => s.name === snapshot)) throw alreadyExists(`${name}/${snapshot}`);
    const s = await this.status(name);
    if (s.state === "running") await this.vb(vbox.control(vboxName(name), "pause"), `snapshot VM '${name}'`);
    try {
      await this.vb(vbox.snapshotTake(vboxName(name), snapshot), `snapshot VM '${name}'`);
    } finally {
      if (s.state === "running") await this.vb(vbox.control(vboxName(name), "resume"), `snapshot VM '${name}'`);
    }
    return { name: snapshot, createdAt: Date.now(), withMemory: s.state === "running" || s.state === "paused" };
  }

  /** VirtualBox restores only a powered-off or saved machine: power off first, then restore and start. */
  async restoreSnapshot(name: string, snapshot: string): Promise<VmStatus> {
    if (!(await this.listSnapshots(name)).some((s) => s.name === snapshot)) throw unknownSnapshot(name, snapshot);
    const s = await this.status(name);
    if (s.state === "running" || s.state === "paused") await this.vb(vbox.control(vboxName(name), "poweroff"), `restore VM '${name}'`);
    await this.vb(vbox.snapshotRestore(vboxName(name), snapshot), `restore VM '${name}'`);
    if (s.state === "running" || s.state === "paused") await this.vb(vbox.start(vboxName(name)), `restore VM '${name}'`);
    return this.status(name);
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<void> {
    if (!(await this.listSnapshots(name)).some((s) => s.name === snapshot)) throw unknownSnapshot(name, snapshot);
    await this.vb(vbox.snapshotDelete(vboxName(name), snapshot), `delete snapshot of VM '${name}'`);
  }

  /** VBoxManage offers no event stream; the state is checked every second (the API's events are not used). */
  async watch(name: string, listener: (event: VmStateEvent) => void): Promise<Disposable> {
    let last = (await this.status(name)).state;
    const timer = setInterval(() => {
      void this.status(name).then(
        (s) => {
          if (s.state === last) return;
          last = s.state;
          listener({ name, state: s.state, cause: "VMState", at: Date.now() });
        },
        () => undefined,
      );
    }, 1000);
    return { dispose: () => clearInterval(timer) };
  }
}

export const virtualboxFactory: DriverFactory = {
  name: "virtualbox",
  async available() {
    try {
      return (await run(VBOXMANAGE, ["--version"], 10_000)).code === 0;
    } catch {
      return false;
    }
  },
  create: (home) => new VirtualBoxDriver(home),
};

