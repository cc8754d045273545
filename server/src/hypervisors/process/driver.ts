/**
 * The process driver: the embedded default when no hypervisor is installed. A "VM" is a guest
 * agent process tree on this host, in its own directory (`root/`: home, tmp, agent state), its
 * own session, and its own PID namespace where `unshare` allows. Pause freezes the tree (cgroup v2
 * freezer, else SIGSTOP of every process in it); a snapshot is a copy of `root/` taken while
 * frozen, so it holds files, not running processes. A DEVELOPMENT STAND-IN: no isolation from
 * the host, no memory snapshots.
 */
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, openSync, closeSync, watch } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VmcError, VmcErrorCodes } from "@vmc/protocol";
import { vmcBundlePath } from "../../broker/ondemand";
import { VmStore, writeAtomic, type VmRecord } from "../../store/vms";
import type { Disposable, Driver, DriverFactory, DriverFeatures, SnapshotInfo, StopOptions, VmSpec, VmStateEvent, VmStatus } from "../driver";
import { alreadyExists, hypervisorFailed, invalidState, unknownSnapshot } from "../errors";
import { cgroupFrozen, processStopped, removeCgroup, setCgroupFrozen, signalTree, vmCgroup } from "./freezer";
import { pidAlive } from "../../pid";

const SNAPSHOT_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/** A process that exited but was not reaped yet (a zombie) counts as gone. */
const processRunning = (pid: number) => pidAlive(pid) && !processZombie(pid);

function processZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return false;
  }
}

let unshareWorks: boolean | undefined;
/** PID namespace for the tree when `unshare` can make one (root, or unprivileged user namespaces). */
function unsharePrefix(): string[] {
  if (unshareWorks === undefined) {
    const r = spawnSync("unshare", ["--pid", "--fork", "--kill-child", "--mount-proc", "true"], { stdio: "ignore", timeout: 5000 });
    unshareWorks = r.status === 0;
  }
  return unshareWorks ? ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--"] : [];
}

export class ProcessDriver implements Driver {
  readonly name = "process" as const;
  readonly features: DriverFeatures = {
    pause: true,
    snapshots: true,
    snapshotsWithMemory: false,
    templates: false,
    gracefulStop: true,
    isolation: "none",
  };
  readonly store: VmStore;

  constructor(readonly home: string) {
    this.store = new VmStore(home);
  }

  private paths(name: string) {
    const dir = this.store.dir(name);
    return { dir, root: join(dir, "root"), pid: join(dir, "agent.pid"), log: join(dir, "console.log"), snapshots: join(dir, "snapshots") };
  }

  private cgroupKey(name: string): string {
    return createHash("sha256").update(this.store.dir(name)).digest("hex").slice(0, 16);
  }

  async create(spec: VmSpec): Promise<VmRecord> {
    if (this.store.exists(spec.name)) throw alreadyExists(spec.name);
    return this.store.create(spec.name, async (dir) => {
      for (const sub of ["root/home", "root/tmp", "root/agent", "snapshots"]) mkdirSync(join(dir, sub), { recursive: true });
      return {
        name: spec.name,
        driver: "process",
        agentId: spec.agentId ?? spec.name,
        memoryMiB: spec.memoryMiB ?? 512,
        cpus: spec.cpus ?? 1,
        createdAt: Date.now(),
        broker: spec.broker,
        controllerPublicKey: spec.controllerPublicKey,
        forwards: [],
        started: false,
        driverData: {},
      };
    });
  }

  private livePid(name: string): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(this.paths(name).pid, "utf8"), 10);
      return pid > 0 && processRunning(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private frozen(name: string, pid: number): boolean {
    const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
    return cg ? cgroupFrozen(cg) : processStopped(pid);
  }

  async status(name: string): Promise<VmStatus> {
    this.store.read(name);
    const pid = this.livePid(name);
    if (pid === undefined) return { name, driver: this.name, state: "stopped", accel: "process" };
    return { name, driver: this.name, state: this.frozen(name, pid) ? "paused" : "running", pid, accel: "process" };
  }

  async start(name: string): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const current = await this.status(name);
      if (current.state !== "stopped") return current;
      const record = this.store.read(name);
      const p = this.paths(name);
      const broker = `stomp://${record.broker.host}:${record.broker.port}`;
      const agent = [...unsharePrefix(), process.execPath, vmcBundlePath(), "agent", "--id", record.agentId, "--broker", broker, "--key", record.controllerPublicKey, "--state-dir", join(p.root, "agent")];
      // The tree joins its cgroup before anything in it runs: moving the pid after spawn would
      // race with `unshare --fork`, whose child (the agent) could already sit outside the group.
      const cg = vmCgroup(this.cgroupKey(name));
      const argv = cg ? ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, ...agent] : agent;
      const log = openSync(p.log, "a");
      const child = spawn(argv[0]!, argv.slice(1), {
        cwd: join(p.root, "home"),
        detached: true,
        stdio: ["ignore", log, log],
        env: { ...process.env, HOME: join(p.root, "home"), TMPDIR: join(p.root, "tmp"), VMC_HOME: join(p.root, "agent") },
      });
      closeSync(log);
      child.unref();
      const pid = child.pid;
      if (!pid) throw hypervisorFailed("process", `start VM '${name}'`, "spawn failed");
      writeAtomic(p.pid, `${pid}\n`);
      this.store.update(name, (r) => {
        r.started = true;
        r.driverData.cgroup = cg ?? null;
      });
      return { name, driver: this.name, state: "running", pid, accel: "process" };
    });
  }

  async stop(name: string, options: StopOptions = {}): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const pid = this.livePid(name);
      if (pid !== undefined) await this.kill(name, pid, options);
      return this.status(name);
    });
  }

  private async kill(name: string, pid: number, options: StopOptions): Promise<void> {
    const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
    if (cg) setCgroupFrozen(cg, false);
    else signalTree(pid, "SIGCONT");
    if (!options.force) {
      signalTree(pid, "SIGTERM");
      const deadline = Date.now() + (options.timeoutMs ?? 10_000);
      while (processRunning(pid) && Date.now() < deadline) await sleep(20);
    }
    if (processRunning(pid)) {
      signalTree(pid, "SIGKILL");
      for (let i = 0; i < 250 && processRunning(pid); i++) await sleep(20);
    }
    rmSync(this.paths(name).pid, { force: true });
    removeCgroup(cg);
  }

  async pause(name: string): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const s = await this.status(name);
      if (s.state === "paused") return s;
      if (s.state !== "running" || s.pid === undefined) throw invalidState(name, "pause", s.state, ["running"]);
      const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
      if (cg) {
        setCgroupFrozen(cg, true);
        for (let i = 0; i < 500 && !cgroupFrozen(cg); i++) await sleep(2);
      } else {
        signalTree(s.pid, "SIGSTOP");
      }
      return { ...s, state: "paused" };
    });
  }

  async resume(name: string): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const s = await this.status(name);
      if (s.state === "running") return s;
      if (s.state !== "paused" || s.pid === undefined) throw invalidState(name, "resume", s.state, ["paused"]);
      const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
      if (cg) setCgroupFrozen(cg, false);
      else signalTree(s.pid, "SIGCONT");
      return { ...s, state: "running" };
    });
  }

  async delete(name: string, options: { force?: boolean } = {}): Promise<void> {
    this.store.read(name);
    await this.store.withLock(name, async () => {
      const pid = this.livePid(name);
      if (pid !== undefined) {
        if (!options.force) throw invalidState(name, "delete", (await this.status(name)).state, ["stopped"]);
        await this.kill(name, pid, { force: true });
      }
      this.store.remove(name);
    });
  }

  async listSnapshots(name: string): Promise<SnapshotInfo[]> {
    this.store.read(name);
    const dir = this.paths(name).snapshots;
    const out: SnapshotInfo[] = [];
    for (const entry of existsSync(dir) ? readdirSync(dir).sort() : []) {
      if (entry.startsWith(".")) continue;
      try {
        out.push(JSON.parse(readFileSync(join(dir, entry, "snapshot.json"), "utf8")) as SnapshotInfo);
      } catch {
        // incomplete
      }
    }
    return out;
  }

  async takeSnapshot(name: string, snapshot: string): Promise<SnapshotInfo> {
    checkName(snapshot);
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const p = this.paths(name);
      if (existsSync(join(p.snapshots, snapshot))) throw alreadyExists(`${name}/${snapshot}`);
      const s = await this.status(name);
      const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
      const freeze = s.state === "running" && s.pid !== undefined;
      if (freeze) cg ? setCgroupFrozen(cg, true) : signalTree(s.pid!, "SIGSTOP");
      const staging = join(p.snapshots, `.new-${snapshot}`);
      try {
        rmSync(staging, { recursive: true, force: true });
        cpSync(p.root, join(staging, "root"), { recursive: true, preserveTimestamps: true });
        const info: SnapshotInfo = { name: snapshot, createdAt: Date.now(), withMemory: false };
        writeFileSync(join(staging, "snapshot.json"), JSON.stringify(info));
        renameSync(staging, join(p.snapshots, snapshot));
        return info;
      } catch (err) {
        rmSync(staging, { recursive: true, force: true });
        throw hypervisorFailed("process", `snapshot VM '${name}'`, (err as Error).message);
      } finally {
        if (freeze) cg ? setCgroupFrozen(cg, false) : signalTree(s.pid!, "SIGCONT");
      }
    });
  }

  /** Puts the directory back; a running VM is restarted on it (its processes are not in the snapshot). */
  async restoreSnapshot(name: string, snapshot: string): Promise<VmStatus> {
    checkName(snapshot);
    this.store.read(name);
    const p = this.paths(name);
    if (!existsSync(join(p.snapshots, snapshot, "snapshot.json"))) throw unknownSnapshot(name, snapshot);
    const wasRunning = (await this.status(name)).state !== "stopped";
    await this.store.withLock(name, async () => {
      const pid = this.livePid(name);
      if (pid !== undefined) await this.kill(name, pid, { timeoutMs: 5000 });
      const next = `${p.root}.restoring`;
      rmSync(next, { recursive: true, force: true });
      cpSync(join(p.snapshots, snapshot, "root"), next, { recursive: true, preserveTimestamps: true });
      rmSync(p.root, { recursive: true, force: true });
      renameSync(next, p.root);
    });
    return wasRunning ? this.start(name) : this.status(name);
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<void> {
    checkName(snapshot);
    this.store.read(name);
    const dir = join(this.paths(name).snapshots, snapshot);
    if (!existsSync(dir)) throw unknownSnapshot(name, snapshot);
    rmSync(dir, { recursive: true, force: true });
  }

  /**
   * Events from the cgroup's `cgroup.events` (frozen, populated) through inotify; without a
   * cgroup, process exit is noticed by a slow check (this driver is a stand-in).
   */
  async watch(name: string, listener: (event: VmStateEvent) => void): Promise<Disposable> {
    this.store.read(name);
    const cg = vmCgroupIfExists(this.home, this.cgroupKey(name));
    let last = (await this.status(name)).state;
    const check = async () => {
      const s = await this.status(name).catch(() => undefined);
      if (!s || s.state === last) return;
      last = s.state;
      listener({ name, state: s.state, cause: s.state === "stopped" ? "exit" : s.state === "paused" ? "freeze" : "thaw", at: Date.now() });
    };
    if (cg) {
      const w = watch(join(cg, "cgroup.events"), () => void check());
      return { dispose: () => w.close() };
    }
    const timer = setInterval(() => void check(), 500);
    return { dispose: () => clearInterval(timer) };
  }
}

function vmCgroupIfExists(_home: string, key: string): string | undefined {
  const dir = vmCgroup(key);
  if (!dir) return undefined;
  try {
    statSync(join(dir, "cgroup.procs"));
    return dir;
  } catch {
    return undefined;
  }
}

function checkName(snapshot: string): void {
  if (!SNAPSHOT_NAME.test(snapshot)) throw new VmcError(VmcErrorCodes.UnknownSnapshot, `invalid snapshot name '${snapshot}'`, { snapshot });
}

export const processFactory: DriverFactory = {
  name: "process",
  available: async () => true,
  create: (home) => new ProcessDriver(home),
};
