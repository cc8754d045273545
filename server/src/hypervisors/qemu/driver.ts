/**
 * The QEMU driver: each VM is a detached `qemu-system-x86_64 -daemonize` (own session, survives
 * the controller) found again through its pid file and QMP sockets, so any controller instance
 * re-adopts it. Two QMP monitors per VM: `qmp.sock` for short control connections (one at a
 * time, serialised by the registry lock) and `events.sock` for one long-lived event watcher.
 */
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VmcError, VmcErrorCodes, type VmState } from "@vmc/protocol";
import { VmStore, type VmRecord } from "../../store/vms";
import type { Disposable, Driver, DriverFactory, DriverFeatures, SnapshotInfo, StopOptions, VmSpec, VmStateEvent, VmStatus } from "../driver";
import { alreadyExists, hypervisorFailed, imageMissing, invalidState, unknownSnapshot } from "../errors";
import { chooseAccel } from "./accel";
import { identityWords, machineFor, qemuArgs, type Accel, type QemuLaunch } from "./command";
import { QEMU_IMG, QEMU_SYSTEM, qemuImg, run } from "./exec";
import { IdentityPort, identityMessage, tellGuest } from "./identity";
import { QmpClient, QmpError, type QmpEvent } from "./qmp";
import { findTemplate, type Template } from "./template";
import { createOverlay } from "./overlay";
import { controlMonitors } from "./monitors";
import { freeLoopbackPort } from "../ports";
import { pidAlive } from "../../pid";

export const SNAPSHOT_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const DEFAULT_MEMORY_MIB = 512;
const DEFAULT_CPUS = 1;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
/** The guest agent's data channel port (agent/src/transfer), forwarded to the host loopback. */
export const AGENT_DATA_PORT = 7733;

/** QMP `query-status` → VmState. */
export function stateFromQmp(status: string): VmState {
  switch (status) {
    case "running":
      return "running";
    case "paused":
    case "suspended":
    case "debug":
    case "io-error":
    case "watchdog":
      return "paused";
    case "inmigrate":
    case "prelaunch":
    case "restore-vm":
    case "finish-migrate":
    case "save-vm":
      return "starting";
    case "shutdown":
      return "stopping";
    case "postmigrate":
      return "saved";
    default:
      return "error";
  }
}

/** QMP event → the state it means, for the events that change state. */
export function stateFromEvent(event: QmpEvent): VmState | undefined {
  switch (event.event) {
    case "STOP":
      return "paused";
    case "RESUME":
      return "running";
    case "POWERDOWN":
    case "SHUTDOWN":
      return "stopping";
    case "GUEST_PANICKED":
      return "error";
    default:
      return undefined;
  }
}

export interface VmFiles {
  dir: string;
  disk: string;
  console: string;
  pid: string;
  qmp: string;
  events: string;
  identity: string;
}

/** True when `pid` is a QEMU process (not a recycled pid now used by something else). */
function isQemu(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("qemu-system");
  } catch {
    return pidAlive(pid);
  }
}

export class QemuDriver implements Driver {
  readonly name = "qemu" as const;
  readonly features: DriverFeatures = {
    pause: true,
    snapshots: true,
    snapshotsWithMemory: true,
    templates: true,
    gracefulStop: true,
    isolation: "vm",
  };
  readonly store: VmStore;
  /** Control connections reused across calls that come close together (pause/resume, status). */
  private readonly monitors = controlMonitors;

  constructor(readonly home: string) {
    this.store = new VmStore(home);
  }

  files(name: string): VmFiles {
    const dir = this.store.dir(name);
    return {
      dir,
      disk: join(dir, "disk.qcow2"),
      console: join(dir, "console.log"),
      pid: join(dir, "qemu.pid"),
      qmp: this.store.socketPath(name, "qmp.sock"),
      events: this.store.socketPath(name, "events.sock"),
      identity: this.store.socketPath(name, "identity.sock"),
    };
  }

  async create(spec: VmSpec): Promise<VmRecord> {
    const image = spec.image;
    if (!image) throw new VmcError(VmcErrorCodes.ImageMissing, "the qemu driver needs a guest image (run `vmc image build`)", {});
    for (const path of [image.kernel, image.initrd, image.rootfs, image.baseDisk]) {
      if (!existsSync(path)) throw imageMissing(path, "no such file");
    }
    const memoryMiB = spec.memoryMiB ?? DEFAULT_MEMORY_MIB;
    const cpus = spec.cpus ?? DEFAULT_CPUS;
    if (this.store.exists(spec.name)) throw alreadyExists(spec.name);
    const template = spec.fromTemplate === false ? undefined : findTemplate(this.home, image.id, memoryMiB, cpus);
    const forwards = [{ guestPort: spec.dataPort ?? AGENT_DATA_PORT, hostPort: await freeLoopbackPort() }];
    return this.store.create(spec.name, async (dir) => {
      await createOverlay(this.home, template ? template.disk : image.baseDisk, join(dir, "disk.qcow2"));
      const record: VmRecord = {
        name: spec.name,
        driver: "qemu",
        agentId: spec.agentId ?? spec.name,
        memoryMiB,
        cpus,
        createdAt: Date.now(),
        broker: spec.broker,
        controllerPublicKey: spec.controllerPublicKey,
        image: { id: image.id, kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs, baseDisk: image.baseDisk, cmdline: image.cmdline },
        forwards,
        started: false,
        driverData: { machine: template ? (template.machine ?? 1) : machineFor(fileSize(image.rootfs)) },
      };
      if (template) record.template = template.dir;
      return record;
    });
  }

  async status(name: string): Promise<VmStatus> {
    const record = this.store.read(name);
    return this.statusOf(record);
  }

  private async statusOf(record: VmRecord): Promise<VmStatus> {
    const f = this.files(record.name);
    const pid = this.livePid(f);
    const base = { name: record.name, driver: this.name };
    const accel = typeof record.driverData.accel === "string" ? record.driverData.accel : undefined;
    if (pid === undefined) {
      const reason = existsSync(f.pid) ? "QEMU exited without a stop request (killed or crashed?)" : undefined;
      return reason ? { ...base, state: "stopped", reason } : { ...base, state: "stopped" };
    }
    try {
      const s = await this.monitors.use(f.qmp, (qmp) => qmp.execute<{ status: string }>("query-status"));
      const state = stateFromQmp(s.status);
      return { ...base, state, pid, ...(accel ? { accel } : {}), ...(state === "error" ? { reason: `QEMU status ${s.status}` } : {}) };
    } catch (err) {
      this.monitors.drop(f.qmp);
      if (!pidAlive(pid)) return { ...base, state: "stopped", reason: "QEMU exited" };
      return { ...base, state: "error", pid, reason: `QMP: ${(err as Error).message}` };
    }
  }

  private livePid(f: VmFiles): number | undefined {
    let text: string;
    try {
      text = readFileSync(f.pid, "utf8");
    } catch {
      return undefined;
    }
    const pid = Number.parseInt(text, 10);
    return Number.isFinite(pid) && pid > 0 && isQemu(pid) ? pid : undefined;
  }

  /** Runs `fn` under the VM's lock with one control-monitor connection (undefined when QEMU is not running). */
  private async control<T>(name: string, fn: (qmp: QmpClient | undefined, record: VmRecord, status: VmStatus) => Promise<T>): Promise<T> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const record = this.store.read(name);
      const f = this.files(name);
      const pid = this.livePid(f);
      if (pid === undefined) return fn(undefined, record, await this.statusOf(record));
      // Two tries: a cached connection can be stale (QEMU restarted since); a fresh one is not.
      for (let attempt = 1; ; attempt++) {
        let status: VmStatus | undefined;
        try {
          return await this.monitors.use(f.qmp, async (qmp) => {
            const s = await qmp.execute<{ status: string }>("query-status");
            const accel = typeof record.driverData.accel === "string" ? record.driverData.accel : undefined;
            status = { name, driver: this.name, state: stateFromQmp(s.status), pid, ...(accel ? { accel } : {}) };
            return await fn(qmp, record, status);
          });
        } catch (err) {
          if (status !== undefined) {
            if (err instanceof QmpError && err.errorClass === "Disconnected") this.monitors.drop(f.qmp);
            throw err;
          }
          this.monitors.drop(f.qmp);
          if (attempt >= 2 || this.livePid(f) === undefined) return fn(undefined, record, await this.statusOf(record));
        }
      }
    });
  }

  async start(name: string, options: { loadvm?: string } = {}): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const record = this.store.read(name);
      const status = await this.statusOf(record);
      if (status.state !== "stopped") return status;
      return this.launch(record, options.loadvm);
    });
  }

  /** Starts QEMU for a stopped VM (caller holds the lock). */
  private async launch(record: VmRecord, loadvm?: string): Promise<VmStatus> {
    const image = record.image;
    if (!image) throw new VmcError(VmcErrorCodes.ImageMissing, `VM '${record.name}' has no guest image recorded`, { name: record.name });
    const f = this.files(record.name);
    this.monitors.drop(f.qmp);
    for (const p of [f.pid, f.qmp, f.events, f.identity]) rmSync(p, { force: true });
    const template = !record.started && !loadvm && record.template ? this.templateOf(record) : undefined;
    const accel: Accel = template ? template.accel : (await chooseAccel(this.home)).accel;
    const launch: QemuLaunch = {
      name: record.name,
      memoryMiB: record.memoryMiB,
      cpus: record.cpus,
      accel,
      kernel: image.kernel,
      initrd: image.initrd,
      append: template ? template.cmdline : `${image.cmdline} ${identityWords(record.agentId, record.controllerPublicKey)}`.trim(),
      rootfs: image.rootfs,
      rootfsBytes: fileSize(image.rootfs),
      disk: f.disk,
      qmpSocket: f.qmp,
      eventsSocket: f.events,
      identitySocket: f.identity,
      consoleLog: f.console,
      pidFile: f.pid,
      brokerHost: record.broker.host,
      brokerPort: record.broker.port,
      forwards: record.forwards,
      ...(template ? { incoming: "defer" } : {}),
      ...(loadvm ? { loadvm } : {}),
      machine: typeof record.driverData.machine === "number" ? record.driverData.machine : 1,
      // A clone maps the template's RAM copy-on-write; the state stream carries only the devices.
      ...(template?.ram ? { ramFile: { path: template.ram, share: false } } : {}),
    };
    const r = await run(QEMU_SYSTEM, qemuArgs(launch), 60_000);
    if (r.code !== 0) {
      rmSync(f.pid, { force: true });
      throw hypervisorFailed("qemu", `start VM '${record.name}'`, r.stderr.trim() || `QEMU exited with ${r.code ?? r.signal}`);
    }
    if (template) {
      try {
        await this.finishIncoming(record, f, `exec:cat ${shellQuote(template.state)}`, template.ram !== undefined);
      } catch (err) {
        const pid = this.livePid(f);
        if (pid !== undefined) process.kill(pid, "SIGKILL");
        for (const p of [f.pid, f.qmp, f.events, f.identity]) rmSync(p, { force: true });
        throw err;
      }
    }
    this.store.update(record.name, (rec) => {
      rec.started = true;
      rec.driverData.accel = accel;
    });
    return this.statusOf(this.store.read(record.name));
  }

  private templateOf(record: VmRecord): Template | undefined {
    const dir = record.template;
    if (!dir) return undefined;
    try {
      return JSON.parse(readFileSync(join(dir, "template.json"), "utf8")) as Template;
    } catch (err) {
      throw hypervisorFailed("qemu", `start VM '${record.name}'`, `its template ${dir} is unreadable: ${(err as Error).message}`);
    }
  }

  /** A template clone: load the saved state, run it, then hand over the identity. */
  private async finishIncoming(record: VmRecord, f: VmFiles, uri: string, ramMapped: boolean): Promise<void> {
    // Connected while the state loads, so the identity goes out the moment the guest runs.
    const port = IdentityPort.open(f.identity);
    port.catch(() => undefined);
    try {
      await this.monitors.use(f.qmp, async (qmp) => {
        const ignoreShared = { capability: "x-ignore-shared", state: ramMapped };
        await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "events", state: true }, ignoreShared] });
        const done = qmp.waitEvent("MIGRATION", 60_000, (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)));
        done.catch(() => undefined);
        await qmp.execute("migrate-incoming", { uri });
        const e = await done;
        if (e.data?.status !== "completed") throw new Error(`loading the template state ${String(e.data?.status)}`);
        // Later savevm/loadvm streams must be the ordinary format (they may load into a plain QEMU).
        if (ramMapped) await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: false }] });
        // The template was saved paused, and a migrated machine keeps the source's run state.
        await qmp.execute("cont");
      });
    } catch (err) {
      void port.then((p) => p.close(), () => undefined);
      throw hypervisorFailed("qemu", `start VM '${record.name}' from its template`, (err as Error).message);
    }
    // The agent's HELLO on the bus is the real readiness signal; the ACK only confirms the hand-over,
    // so it is awaited off the start path and recorded when it comes.
    const identity = identityMessage(record.agentId, record.controllerPublicKey);
    void port
      .then(async (p) => {
        try {
          const ack = p.waitFor("ACK", 5000);
          p.send(identity);
          return await ack;
        } finally {
          p.close();
        }
      })
      .catch(() => false)
      .then((acked) => {
        if (this.store.exists(record.name)) this.store.update(record.name, (rec) => void (rec.driverData.identityAcked = acked));
      })
      .catch(() => undefined);
  }

  async stop(name: string, options: StopOptions = {}): Promise<VmStatus> {
    this.store.read(name);
    return this.store.withLock(name, async () => {
      const record = this.store.read(name);
      const status = await this.statusOf(record);
      if (status.state === "stopped") {
        rmSync(this.files(name).pid, { force: true });
        return status;
      }
      await this.terminate(record, status.pid, options);
      return this.statusOf(record);
    });
  }

  /** Graceful (ACPI power button, bounded wait), then `quit`, then SIGKILL. Caller holds the lock. */
  private async terminate(record: VmRecord, pid: number | undefined, options: StopOptions): Promise<void> {
    const f = this.files(record.name);
    const timeoutMs = options.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    this.monitors.drop(f.qmp);
    let qmp: QmpClient | undefined;
    try {
      qmp = await QmpClient.connect(f.qmp, 2000);
    } catch {
      qmp = undefined;
    }
    try {
      if (qmp && !options.force) {
        const gone = qmp.closed.then(() => true);
        await qmp.execute("system_powerdown").catch(() => undefined);
        const done = await Promise.race([gone, sleep(timeoutMs).then(() => false)]);
        if (done) qmp = undefined;
      }
      if (qmp) {
        await qmp.execute("quit").catch(() => undefined);
        await Promise.race([qmp.closed, sleep(3000)]);
      }
    } finally {
      qmp?.close();
    }
    if (pid !== undefined && pidAlive(pid)) {
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 200 && pidAlive(pid); i++) await sleep(10);
    }
    // QEMU removes its pid file on a clean exit; after a kill it is ours to remove.
    for (let i = 0; i < 100 && pid !== undefined && isQemu(pid); i++) await sleep(10);
    for (const p of [f.pid, f.qmp, f.events, f.identity]) rmSync(p, { force: true });
  }

  async pause(name: string): Promise<VmStatus> {
    return this.control(name, async (qmp, record, status) => {
      if (status.state === "paused") return status;
      if (status.state !== "running" || !qmp) throw invalidState(name, "pause", status.state, ["running"]);
      await qmp.execute("stop");
      return { ...status, state: "paused" as const };
    });
  }

  async resume(name: string): Promise<VmStatus> {
    return this.control(name, async (qmp, record, status) => {
      if (status.state === "running") return status;
      if (status.state !== "paused" || !qmp) throw invalidState(name, "resume", status.state, ["paused"]);
      await qmp.execute("cont");
      return { ...status, state: "running" as const };
    });
  }

  async delete(name: string, options: { force?: boolean } = {}): Promise<void> {
    this.store.read(name);
    await this.store.withLock(name, async () => {
      const record = this.store.read(name);
      const status = await this.statusOf(record);
      if (status.state !== "stopped") {
        if (!options.force) throw invalidState(name, "delete", status.state, ["stopped"]);
        await this.terminate(record, status.pid, { force: true });
      }
      const f = this.files(name);
      for (const p of [f.qmp, f.events, f.identity]) rmSync(p, { force: true });
      this.store.remove(name);
    });
  }

  async listSnapshots(name: string): Promise<SnapshotInfo[]> {
    this.store.read(name);
    const out = await qemuImg(["info", "-U", "--output=json", this.files(name).disk], "list snapshots");
    return snapshotsFrom((JSON.parse(out) as { snapshots?: RawSnapshot[] }).snapshots);
  }

  /** The snapshots of a running VM's disk, from QEMU itself (no qemu-img process). */
  private async snapshotsVia(qmp: QmpClient | undefined, name: string): Promise<SnapshotInfo[]> {
    if (!qmp) return this.listSnapshots(name);
    const devices = await qmp.execute<{ device: string; inserted?: { image?: { snapshots?: RawSnapshot[] } } }[]>("query-block");
    return snapshotsFrom(devices.find((d) => d.device === "disk")?.inserted?.image?.snapshots);
  }

  async takeSnapshot(name: string, snapshot: string): Promise<SnapshotInfo> {
    checkSnapshotName(snapshot);
    return this.control(name, async (qmp, record, status) => {
      if ((await this.snapshotsVia(qmp, name)).some((s) => s.name === snapshot)) throw alreadyExists(`${name}/${snapshot}`);
      if (status.state === "stopped") {
        await qemuImg(["snapshot", "-c", snapshot, this.files(name).disk], `snapshot VM '${name}'`);
      } else if (qmp && (status.state === "running" || status.state === "paused")) {
        // savevm stops the vCPUs, writes RAM and devices into the writable qcow2 (the read-only
        // rootfs is skipped) and restores the previous run state.
        const out = await qmp.hmp(`savevm ${snapshot}`);
        if (out.trim()) {
          await qmp.hmp(`delvm ${snapshot}`).catch(() => undefined);
          if (status.state === "running") await qmp.execute("cont").catch(() => undefined);
          throw hypervisorFailed("qemu", `snapshot VM '${name}'`, out.trim(), { name, snapshot });
        }
      } else {
        throw invalidState(name, "snapshot", status.state, ["running", "paused", "stopped"]);
      }
      // Bound the window of unflushed state without making the caller wait for the disk.
      void flushFile(this.files(name).disk).catch(() => undefined);
      const taken = (await this.snapshotsVia(qmp, name)).find((s) => s.name === snapshot);
      if (!taken) throw hypervisorFailed("qemu", `snapshot VM '${name}'`, "the snapshot did not appear in the disk image");
      return taken;
    });
  }

  /**
   * Restores a snapshot. A running or paused VM restores in place (`loadvm`) and its agent is told
   * through the identity port that its broker connection is stale; a stopped VM starts from the
   * snapshot in a fresh QEMU (`-loadvm`). A disk-only snapshot restores the disk of a stopped VM.
   */
  async restoreSnapshot(name: string, snapshot: string): Promise<VmStatus> {
    checkSnapshotName(snapshot);
    return this.control(name, async (qmp, record, status) => {
      const snap = (await this.snapshotsVia(qmp, name)).find((s) => s.name === snapshot);
      if (!snap) throw unknownSnapshot(name, snapshot);
      const f = this.files(name);
      if (status.state === "stopped" || !qmp) {
        if (status.state !== "stopped") throw invalidState(name, "restore", status.state, ["running", "paused", "stopped"]);
        if (!snap.withMemory) {
          await qemuImg(["snapshot", "-a", snapshot, f.disk], `restore VM '${name}'`);
          return this.statusOf(record);
        }
        return this.launch({ ...record, started: true }, snapshot);
      }
      if (status.state !== "running" && status.state !== "paused") throw invalidState(name, "restore", status.state, ["running", "paused", "stopped"]);
      if (!snap.withMemory) throw invalidState(name, "restore a disk-only snapshot into", status.state, ["stopped"]);
      // loadvm resumes a snapshot taken running; one taken paused stays paused, and comes back running here.
      const out = await qmp.hmp(`loadvm ${snapshot}`);
      if (out.trim()) throw hypervisorFailed("qemu", `restore VM '${name}'`, out.trim(), { name, snapshot });
      const s = await qmp.execute<{ status: string }>("query-status");
      if (s.status !== "running") await qmp.execute("cont");
      // The agent's broker connection is now silently dead: tell it (it reconnects and says HELLO).
      void tellGuest(f.identity, { type: "RESTORED", hostTimeMs: Date.now() }, 2000).catch(() => false);
      return { ...status, state: "running" as const };
    });
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<void> {
    checkSnapshotName(snapshot);
    await this.control(name, async (qmp, _record, status) => {
      if (!(await this.snapshotsVia(qmp, name)).some((s) => s.name === snapshot)) throw unknownSnapshot(name, snapshot);
      if (status.state === "stopped") {
        await qemuImg(["snapshot", "-d", snapshot, this.files(name).disk], `delete snapshot of VM '${name}'`);
        return;
      }
      if (!qmp) throw invalidState(name, "delete a snapshot of", status.state, ["running", "paused", "stopped"]);
      const out = await qmp.hmp(`delvm ${snapshot}`);
      if (out.trim()) throw hypervisorFailed("qemu", `delete snapshot of VM '${name}'`, out.trim());
    });
  }

  /**
   * Subscribes to the VM's state changes through its event monitor (QMP events), ending with a
   * `stopped` event when QEMU exits. One watcher per VM at a time (QEMU serves one client per
   * monitor socket); a second one waits until the first disposes.
   */
  async watch(name: string, listener: (event: VmStateEvent) => void): Promise<Disposable> {
    this.store.read(name);
    const f = this.files(name);
    const qmp = await QmpClient.connect(f.events);
    let disposed = false;
    qmp.on("event", (e: QmpEvent) => {
      const state = stateFromEvent(e);
      const reason = e.event === "SHUTDOWN" && typeof e.data?.reason === "string" ? e.data.reason : undefined;
      if (state) listener({ name, state, cause: e.event, ...(reason ? { reason } : {}), at: Date.now() });
    });
    qmp.once("close", () => {
      if (!disposed) listener({ name, state: "stopped", cause: "exit", at: Date.now() });
    });
    return {
      dispose() {
        disposed = true;
        qmp.close();
      },
    };
  }
}

/** Pushes the overlay to stable storage: it runs with cache=unsafe, so QEMU itself never flushes it. */
async function flushFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

interface RawSnapshot {
  name: string;
  "vm-state-size": number;
  "date-sec": number;
  "date-nsec": number;
}

function snapshotsFrom(raw: RawSnapshot[] | undefined): SnapshotInfo[] {
  return (raw ?? []).map((s) => ({
    name: s.name,
    createdAt: s["date-sec"] * 1000 + Math.floor(s["date-nsec"] / 1e6),
    withMemory: s["vm-state-size"] > 0,
    vmStateBytes: s["vm-state-size"],
  }));
}

function checkSnapshotName(snapshot: string): void {
  if (!SNAPSHOT_NAME.test(snapshot)) {
    throw new VmcError(VmcErrorCodes.UnknownSnapshot, `invalid snapshot name '${snapshot}': letters, digits, '.', '-', '_' (at most 64)`, { snapshot });
  }
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

export const qemuFactory: DriverFactory = {
  name: "qemu",
  async available() {
    try {
      const [a, b] = await Promise.all([run(QEMU_SYSTEM, ["--version"], 10_000), run(QEMU_IMG, ["--version"], 10_000)]);
      return a.code === 0 && b.code === 0;
    } catch {
      return false;
    }
  },
  create: (home) => new QemuDriver(home),
};

export { QmpError };

/** The size of an image file; a typed error when it has gone (an image deleted under its VMs). */
function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch (err) {
    throw imageMissing(path, (err as Error).message);
  }
}
