/**
 * Follows the state of every VM in $VMC_HOME, also VMs created, started or deleted by other
 * processes: inotify on the registry directory and on each VM's directory says *when* to look,
 * the driver's own `watch` (QMP events, cgroup events) reports pauses and exits as they happen.
 * Each change is reported once (repeated observations of the same state are folded).
 * @packageDocumentation
 */
import { mkdirSync, watch, type FSWatcher } from "node:fs";
import type { VmState } from "@vmc/protocol";
import type { VmStateChange } from "@vmc/protocol/rpc";
import type { Disposable, Driver } from "../hypervisors/driver";
import type { VmStore } from "../store/vms";

export interface VmWatchOptions {
  store: VmStore;
  driverOf(name: string): Driver;
  onChange(change: VmStateChange): void;
  log(message: string): void;
}

class Tracker {
  state: VmState | null = null;
  private driverWatch: Disposable | undefined;
  private attaching = false;
  private dirWatch: FSWatcher | undefined;
  private pending: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> = Promise.resolve();
  private errorConfirming = false;
  closed = false;

  constructor(
    readonly name: string,
    private readonly options: VmWatchOptions,
  ) {
    try {
      this.dirWatch = watch(options.store.dir(name), () => this.soon("observed"));
      this.dirWatch.on("error", () => undefined);
    } catch {
      // the directory went away already; the registry watch will drop this tracker
    }
  }

  /** Looks again shortly (folds bursts of file events into one status call). */
  soon(cause: string): void {
    if (this.closed || this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      void this.refresh(cause);
    }, 15);
  }

  /** Reads the status now; reports a change; attaches the driver's watch while the VM runs. */
  refresh(cause: string): Promise<void> {
    this.refreshing = this.refreshing.then(async () => {
      if (this.closed) return;
      let state: VmState;
      try {
        state = (await this.options.driverOf(this.name).status(this.name)).state;
      } catch {
        return;
      }
      if (state === "error" && cause === "observed" && !this.errorConfirming) {
        // A VM seen mid-launch by another process's start can look broken for a moment: look again.
        this.errorConfirming = true;
        setTimeout(() => void this.refresh("observed").finally(() => (this.errorConfirming = false)), 300).unref();
        return;
      }
      this.report(state, cause);
      if (state !== "stopped" && state !== "saved" && !this.driverWatch) await this.attach();
    });
    return this.refreshing;
  }

  report(state: VmState, cause: string, at = Date.now()): void {
    if (this.closed || state === this.state) return;
    if (cause === "initial") {
      this.state = state;
      return;
    }
    const previous = this.state;
    this.state = state;
    this.options.onChange({ name: this.name, state, previous, cause, at });
  }

  private async attach(): Promise<void> {
    if (this.attaching || this.closed) return;
    this.attaching = true;
    try {
      const w = await this.options.driverOf(this.name).watch(this.name, (e) => {
        this.report(e.state, e.cause, e.at);
        if (e.state === "stopped") {
          this.driverWatch?.dispose();
          this.driverWatch = undefined;
        }
      });
      if (this.closed) w.dispose();
      else this.driverWatch = w;
    } catch {
      // not running any more (or not yet reachable): the directory watch will tell us
    } finally {
      this.attaching = false;
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.pending);
    this.dirWatch?.close();
    this.driverWatch?.dispose();
  }
}

export class VmWatch {
  private readonly trackers = new Map<string, Tracker>();
  private registryWatch: FSWatcher | undefined;
  private scanTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: VmWatchOptions) {}

  /** Starts following; resolves once every existing VM's state is known. */
  async start(): Promise<void> {
    mkdirSync(this.options.store.root, { recursive: true });
    this.registryWatch = watch(this.options.store.root, () => this.scanSoon());
    this.registryWatch.on("error", (e) => this.options.log(`registry watch: ${e.message}`));
    await this.scan(true);
  }

  /** The last state seen for `name`, if it is known. */
  state(name: string): VmState | null {
    return this.trackers.get(name)?.state ?? null;
  }

  /** Looks at `name` now (after an operation of ours), so the change is reported before we answer. */
  async refresh(name: string, cause: string): Promise<void> {
    await this.scan(false);
    await this.trackers.get(name)?.refresh(cause);
  }

  private scanSoon(): void {
    if (this.scanTimer) return;
    this.scanTimer = setTimeout(() => {
      this.scanTimer = undefined;
      void this.scan(false);
    }, 15);
  }

  private async scan(initial: boolean): Promise<void> {
    const names = new Set(this.options.store.list().map((r) => r.name));
    const added: Tracker[] = [];
    for (const name of names) {
      if (this.trackers.has(name)) continue;
      const t = new Tracker(name, this.options);
      this.trackers.set(name, t);
      added.push(t);
    }
    for (const [name, t] of this.trackers) {
      if (names.has(name)) continue;
      this.trackers.delete(name);
      const previous = t.state;
      t.close();
      this.options.onChange({ name, state: "stopped", previous, cause: "deleted", at: Date.now() });
    }
    await Promise.all(
      added.map(async (t) => {
        if (!initial) t.report("stopped", "created");
        await t.refresh(initial ? "initial" : "observed");
      }),
    );
  }

  close(): void {
    clearTimeout(this.scanTimer);
    this.registryWatch?.close();
    for (const t of this.trackers.values()) t.close();
    this.trackers.clear();
  }
}
