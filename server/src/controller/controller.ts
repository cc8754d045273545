/**
 * The controller behind both JSON-RPC endpoints: one fleet session (bus + agent registry), the
 * VM drivers over the shared registry in $VMC_HOME, the command history ({@link CommandService})
 * and transfers. It turns driver events, registry changes and the bus state into the typed events
 * of {@link ControllerEvents}; the endpoint forwards them as notifications.
 *
 * Several controllers (an editor window, a BOINC wrapper) may run at once on the same $VMC_HOME
 * and broker: VMs are driven through the registry's per-VM locks, and each controller learns about
 * the others' changes from the file system (see ./vm-watch).
 * @packageDocumentation
 */
import { VmcError, VmcErrorCodes, type DriverName } from "@vmc/protocol";
import {
  RPC_PROTOCOL_VERSION,
  type AgentInfo,
  type AgentListRequest,
  type CommandOutputEvent,
  type CommandRecord,
  type DriverInfo,
  type FileGetParams,
  type FilePutParams,
  type FileTransferResult,
  type Handshake,
  type SnapshotInfo,
  type TransferProgressValue,
  type VmCreateRequest,
  type VmInfo,
  type VmStartRequest,
  type VmStateChange,
  type VmStopRequest,
} from "@vmc/protocol/rpc";
import type { z } from "zod";
import { brokerUrl as resolveBrokerUrl, parseBrokerUrl } from "../config";
import type { Driver } from "../hypervisors/driver";
import { defaultDriverName, driverByName, factories } from "../hypervisors/index";
import { openFleetSession, type FleetSession } from "../fleet/session";
import type { AgentInfo as RegistryAgent } from "../fleet/registry";
import { expandTarget, parseTarget, TargetSyntaxError } from "../fleet/target";
import { loadOrCreateControllerKeys, readControllerPublicKey } from "../store/keys";
import { VmStore } from "../store/vms";
import { acquireControllerLease, LEASED_REPLY_EXPIRES_MS, type ControllerLease } from "../store/controller-lease";
import { CommandService, preferredSlots, type VmDirectory } from "./commands";
import { createGuestFs, type GuestFs } from "./guest-fs";
import { Transfers } from "./transfers";
import { VmWatch } from "./vm-watch";

export interface ControllerEvents {
  vmStateChanged(change: VmStateChange): void;
  agentChanged(agent: AgentInfo & { removed?: boolean }): void;
  brokerState(state: { connected: boolean; broker: string; reason?: string }): void;
  cmdStarted(record: CommandRecord): void;
  cmdOutput(event: CommandOutputEvent): void;
  cmdFinished(record: CommandRecord): void;
}

export interface ControllerOptions {
  home: string;
  /** Default `$VMC_BROKER`, else the embedded broker's address (started on demand). */
  brokerUrl?: string;
  serverVersion: string;
  events: ControllerEvents;
  log: (message: string) => void;
}

/** Reports progress of a long request (`$/progress` when the client gave a token). */
export type ProgressReporter = (value: TransferProgressValue) => void;

type VmCreateParams = z.infer<typeof VmCreateRequest.params>;
type VmStartParams = z.infer<typeof VmStartRequest.params>;
type VmStopParams = z.infer<typeof VmStopRequest.params>;
type AgentListParams = NonNullable<z.infer<typeof AgentListRequest.params>>;

const DRIVER_NAMES = Object.keys(factories) as DriverName[];

export class Controller implements VmDirectory {
  readonly guestFs: GuestFs;
  private readonly disposers: Array<() => void> = [];
  private closed = false;

  private constructor(
    private readonly options: ControllerOptions,
    readonly session: FleetSession,
    readonly commands: CommandService,
    private readonly watch: VmWatch,
    readonly transfers: Transfers,
    private readonly driverInfo: DriverInfo[],
    private readonly defaultDriver: DriverName,
    private readonly broker: string,
    readonly store: VmStore,
    private readonly drivers: Map<DriverName, Driver>,
    private readonly lease: ControllerLease,
  ) {
    this.guestFs = createGuestFs(session.fleet, (target) => (store.exists(target) ? store.read(target).agentId : target));
  }

  static async open(options: ControllerOptions): Promise<Controller> {
    const url = resolveBrokerUrl(options.brokerUrl);
    const broker = redact(url);
    // A stable identity (slot) so a restarted controller reads the replies its predecessor's commands left queued.
    const lease = acquireControllerLease(options.home, { prefer: preferredSlots(options.home) });
    let session: FleetSession;
    let driverInfo: DriverInfo[];
    let defaultDriver: DriverName;
    try {
      [session, driverInfo, defaultDriver] = await Promise.all([
        openFleetSession({ brokerUrl: url, home: options.home, name: "vmc-rpc", log: options.log, instanceId: lease.instanceId, replyExpiresMs: LEASED_REPLY_EXPIRES_MS }),
        Promise.all(DRIVER_NAMES.map(async (name) => describeDriver(options.home, name))),
        defaultDriverName(),
      ]);
    } catch (err) {
      lease.release();
      throw err;
    }
    const store = new VmStore(options.home);
    const drivers = new Map<DriverName, Driver>();
    const driverOf = (vm: string): Driver => {
      const name = store.read(vm).driver;
      let d = drivers.get(name);
      if (!d) drivers.set(name, (d = driverByName(options.home, name)));
      return d;
    };
    let controller: Controller | undefined;
    const watch = new VmWatch({
      store,
      driverOf,
      log: options.log,
      onChange: (change) => {
        controller?.commands.vmStateChanged(change);
        options.events.vmStateChanged(change);
      },
    });
    try {
      const directory: VmDirectory = { vmOfAgent: (agentId) => controller?.vmOfAgent(agentId) };
      const commands = await CommandService.open({
        home: options.home,
        fleet: session.fleet,
        vms: directory,
        log: options.log,
        events: {
          started: (r) => options.events.cmdStarted(r),
          output: (e) => options.events.cmdOutput(e),
          finished: (r) => options.events.cmdFinished(r),
        },
      });
      const keys = loadOrCreateControllerKeys(options.home);
      const transfers = new Transfers({ signingKey: keys.privateKey, bus: session.bus, fleet: session.fleet, store });
      controller = new Controller(options, session, commands, watch, transfers, driverInfo, defaultDriver, broker, store, drivers, lease);
      controller.attachEvents();
      await watch.start();
      return controller;
    } catch (err) {
      watch.close();
      await session.close();
      lease.release();
      throw err;
    }
  }

  private attachEvents(): void {
    const { events } = this.options;
    this.disposers.push(
      this.session.fleet.registry.onChange((c) => {
        events.agentChanged({ ...this.agentInfo(c.agent), ...(c.kind === "removed" ? { removed: true } : {}) });
      }),
      this.session.bus.onState((state) => {
        if (state === "connected") events.brokerState({ connected: true, broker: this.broker });
        else if (state === "disconnected" || state === "reconnecting") events.brokerState({ connected: false, broker: this.broker, reason: state });
      }),
    );
  }

  handshake(): Handshake {
    return {
      serverVersion: this.options.serverVersion,
      protocolVersion: RPC_PROTOCOL_VERSION,
      drivers: this.driverInfo,
      defaultDriver: this.defaultDriver,
      broker: this.broker,
      brokerConnected: this.session.bus.connected,
      home: this.options.home,
    };
  }

  /** The driver of an existing VM (UnknownVm when there is none). */
  driverForVm(name: string): Driver {
    return this.driver(this.store.read(name).driver);
  }

  private driver(name: DriverName): Driver {
    let d = this.drivers.get(name);
    if (!d) this.drivers.set(name, (d = driverByName(this.options.home, name)));
    return d;
  }

  vmOfAgent(agentId: string): string | undefined {
    return this.store.list().find((r) => r.agentId === agentId)?.name;
  }

  async listVms(): Promise<VmInfo[]> {
    return Promise.all(this.store.list().map((r) => this.vmInfo(r.name)));
  }

  async vmInfo(name: string): Promise<VmInfo> {
    const record = this.store.read(name);
    const status = await this.driver(record.driver)
      .status(name)
      .catch((e: unknown) => {
        if (e instanceof VmcError && e.code === VmcErrorCodes.UnknownVm) throw e;
        return { state: "error" as const, reason: e instanceof Error ? e.message : String(e), accel: undefined };
      });
    return {
      name,
      driver: record.driver,
      state: status.state,
      ...(status.reason ? { reason: status.reason } : {}),
      agentId: record.agentId,
      memoryMiB: record.memoryMiB,
      cpus: record.cpus,
      ...(status.accel ? { accel: status.accel } : {}),
      agentOnline: this.session.fleet.registry.get(record.agentId)?.state === "online",
    };
  }

  /** Like `vmc vm create`: the cached guest image (built when missing), this controller's key and broker. */
  async createVm(params: VmCreateParams, progress?: (message: string) => void): Promise<VmInfo> {
    const driverName = params.driver ?? this.defaultDriver;
    const info = this.driverInfo.find((d) => d.name === driverName);
    if (info && !info.available) throw new VmcError(VmcErrorCodes.NotSupported, `the ${driverName} driver is not available on this host`, { driver: driverName, operation: "create" });
    const driver = this.driver(driverName);
    const broker = parseBrokerUrl(resolveBrokerUrl(this.options.brokerUrl));
    let image;
    if (driverName !== "process") {
      progress?.("preparing the guest image");
      const { resolveImage } = await import("../cli/vm");
      image = await resolveImage(this.options.home, params.image, (m) => progress?.(m));
    }
    progress?.(`creating ${params.name}`);
    await driver.create({
      name: params.name,
      ...(params.agentId ? { agentId: params.agentId } : {}),
      ...(image ? { image } : {}),
      ...(params.memoryMiB ? { memoryMiB: params.memoryMiB } : {}),
      ...(params.cpus ? { cpus: params.cpus } : {}),
      broker: { host: broker.host, port: broker.port },
      controllerPublicKey: readControllerPublicKey(this.options.home),
      fromTemplate: params.fromTemplate ?? true,
    });
    await this.watch.refresh(params.name, "created");
    if (params.start) {
      progress?.(`starting ${params.name}`);
      await driver.start(params.name);
      await this.watch.refresh(params.name, "start");
    }
    return this.vmInfo(params.name);
  }

  /** Starts the VM; with `waitForAgent`, answers once its agent said HELLO (or is already online). */
  async startVm(params: VmStartParams, signal?: AbortSignal): Promise<VmInfo> {
    const driver = this.driverForVm(params.name);
    const record = this.store.read(params.name);
    const before = (await driver.status(params.name)).state;
    const registry = this.session.fleet.registry;
    let hello: Promise<void> | undefined;
    let stopWaiting = () => {};
    if (params.waitForAgent) {
      const timeoutMs = params.agentTimeoutMs ?? 60_000;
      hello = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          stopWaiting();
          reject(new VmcError(VmcErrorCodes.AgentUnreachable, `the agent '${record.agentId}' of VM '${params.name}' did not say HELLO within ${timeoutMs} ms`, { name: params.name, agentId: record.agentId, timeoutMs }));
        }, timeoutMs);
        const off = registry.onHello((id) => {
          if (id !== record.agentId) return;
          stopWaiting();
          resolve();
        });
        const onAbort = () => {
          stopWaiting();
          reject(cancelled());
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        stopWaiting = () => {
          clearTimeout(timer);
          off();
          signal?.removeEventListener("abort", onAbort);
        };
      });
      hello.catch(() => undefined);
    }
    try {
      await driver.start(params.name);
      await this.watch.refresh(params.name, "start");
      if (hello) {
        const running = before === "running" || before === "paused";
        if (running && registry.get(record.agentId)?.state === "online") stopWaiting();
        else {
          if (running) void this.session.fleet.discover().catch(() => undefined);
          await hello;
        }
      }
    } finally {
      stopWaiting();
    }
    return this.vmInfo(params.name);
  }

  async stopVm(params: VmStopParams): Promise<VmInfo> {
    await this.driverForVm(params.name).stop(params.name, {
      ...(params.timeoutMs !== undefined ? { timeoutMs: params.timeoutMs } : {}),
      ...(params.force !== undefined ? { force: params.force } : {}),
    });
    await this.watch.refresh(params.name, "stop");
    return this.vmInfo(params.name);
  }

  async pauseVm(name: string): Promise<VmInfo> {
    await this.driverForVm(name).pause(name);
    await this.watch.refresh(name, "pause");
    return this.vmInfo(name);
  }

  async resumeVm(name: string): Promise<VmInfo> {
    await this.driverForVm(name).resume(name);
    await this.watch.refresh(name, "resume");
    return this.vmInfo(name);
  }

  async deleteVm(name: string, force?: boolean): Promise<null> {
    await this.driverForVm(name).delete(name, { force: force ?? false });
    await this.watch.refresh(name, "deleted");
    return null;
  }

  async takeSnapshot(name: string, snapshot: string): Promise<SnapshotInfo> {
    const info = await this.driverForVm(name).takeSnapshot(name, snapshot);
    await this.watch.refresh(name, "snapshot");
    return info;
  }

  /** Restores; the command history ends the commands sent after the snapshot as `rolledBack`. */
  async restoreSnapshot(name: string, snapshot: string): Promise<VmInfo> {
    const driver = this.driverForVm(name);
    const taken = (await driver.listSnapshots(name)).find((s) => s.name === snapshot);
    if (!taken) throw new VmcError(VmcErrorCodes.UnknownSnapshot, `VM '${name}' has no snapshot '${snapshot}'`, { name, snapshot });
    // Told first: a driver that restarts the guest's agent (process driver) makes it report its
    // commands as killed while restoring, and they must end as rolled back, not cancelled.
    this.commands.snapshotRestored(name, this.store.read(name).agentId, taken.createdAt, Date.now(), snapshot);
    await driver.restoreSnapshot(name, snapshot);
    await this.watch.refresh(name, "restore");
    return this.vmInfo(name);
  }

  listSnapshots(name: string): Promise<SnapshotInfo[]> {
    return this.driverForVm(name).listSnapshots(name);
  }

  async deleteSnapshot(name: string, snapshot: string): Promise<null> {
    await this.driverForVm(name).deleteSnapshot(name, snapshot);
    return null;
  }

  async listAgents(params: AgentListParams = {}): Promise<AgentInfo[]> {
    const fleet = this.session.fleet;
    if (params.discover) await fleet.discover();
    let agents = fleet.agents();
    if (params.target) {
      let ids: Set<string>;
      try {
        ids = new Set(expandTarget(parseTarget(params.target), agents).agentIds);
      } catch (err) {
        if (err instanceof TargetSyntaxError) throw new VmcError(-32602, err.message, { field: "target" });
        throw err;
      }
      agents = agents.filter((a) => ids.has(a.agentId));
    }
    return agents.map((a) => this.agentInfo(a));
  }

  private agentInfo(a: Readonly<RegistryAgent>): AgentInfo {
    const vm = this.vmOfAgent(a.agentId);
    return {
      agentId: a.agentId,
      labels: { ...a.labels },
      online: a.state === "online",
      lastSeen: a.lastSeenAt,
      ...(vm ? { vm } : {}),
      ...(a.hello ? { os: `${a.hello.os.platform} ${a.hello.os.release} ${a.hello.os.arch}`, agentVersion: a.hello.agentVersion } : {}),
      running: a.running,
      ...(a.offlineReason ? { offlineReason: a.offlineReason } : {}),
    };
  }

  putFiles(params: FilePutParams, signal: AbortSignal, progress?: ProgressReporter): Promise<FileTransferResult> {
    return this.transfers.put(params, signal, progress);
  }

  getFiles(params: FileGetParams, signal: AbortSignal, progress?: ProgressReporter): Promise<FileTransferResult> {
    return this.transfers.get(params, signal, progress);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.disposers.splice(0)) d();
    this.watch.close();
    await this.commands.close().catch((e: unknown) => this.options.log(`closing the command history: ${String(e)}`));
    await this.session.close();
    this.lease.release();
  }
}

async function describeDriver(home: string, name: DriverName): Promise<DriverInfo> {
  const available = await factories[name].available().catch(() => false);
  return { name, available, features: { ...driverByName(home, name).features } };
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString().replace(/\/$/, "");
  } catch {
    return url;
  }
}

export function cancelled(): VmcError {
  return new VmcError(-32800, "request cancelled");
}
