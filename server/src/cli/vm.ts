/**
 * `vmc vm ls|create|start|stop|pause|resume|rm|snapshot|restore|snapshots|template|watch`.
 * Every subcommand takes `--json` (one JSON document on stdout; errors as `{"error":{code,message,data}}`).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DriverName, VmcError } from "@vmc/protocol";
import { brokerUrl, parseBrokerUrl, vmcHome } from "../config";
import type { BootImage, Driver, VmStatus } from "../hypervisors/driver";
import { defaultDriverName, driverByName, driverForVm } from "../hypervisors/index";
import { VmStore } from "../store/vms";

const USAGE = `usage:
  vmc vm ls [--json]
  vmc vm create NAME [--image DIR] [--memory MIB] [--cpus N] [--driver qemu|virtualbox|process] [--agent-id ID] [--no-template] [--start]
  vmc vm start|pause|resume NAME
  vmc vm stop NAME [--timeout S] [--force]
  vmc vm rm NAME [--force]
  vmc vm snapshot NAME SNAP | vmc vm restore NAME SNAP | vmc vm snapshots NAME | vmc vm snapshot-rm NAME SNAP
  vmc vm template [--memory MIB] [--cpus N]      boot the guest once and save it: later creates skip the boot
  vmc vm watch NAME                              print state changes as they happen
All take --json, --broker URL (env VMC_BROKER) and use $VMC_HOME.`;

/** The guest image: `--image DIR` (a built image directory), else the image builder's cached image. */
export async function resolveImage(home: string, dir: string | undefined, progress: (msg: string) => void): Promise<BootImage> {
  if (dir) {
    const manifestPath = join(dir, "manifest.json");
    if (!existsSync(manifestPath)) throw new VmcError(-33011, `no guest image in ${dir} (manifest.json missing)`, { path: dir });
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as { id: string; cmdline: string };
    return { id: manifest.id, kernel: join(dir, "kernel"), initrd: join(dir, "initrd"), rootfs: join(dir, "rootfs.img"), baseDisk: join(dir, "base.qcow2"), cmdline: manifest.cmdline };
  }
  const { ensureGuestImage } = await import("../image/index");
  return ensureGuestImage({ home, onProgress: progress });
}

function printStatus(s: VmStatus): void {
  console.log(`${s.name}: ${s.state}${s.accel ? ` (${s.driver}, ${s.accel})` : ` (${s.driver})`}${s.reason ? ` — ${s.reason}` : ""}`);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: "boolean", default: false },
      broker: { type: "string" },
      image: { type: "string" },
      memory: { type: "string" },
      cpus: { type: "string" },
      driver: { type: "string" },
      "agent-id": { type: "string" },
      "no-template": { type: "boolean", default: false },
      start: { type: "boolean", default: false },
      timeout: { type: "string" },
      force: { type: "boolean", default: false },
    },
  });
  const home = vmcHome();
  const json = values.json;
  const out = (value: unknown, human: () => void) => (json ? console.log(JSON.stringify(value, null, 2)) : human());
  const progress = (msg: string) => {
    if (!json) console.error(msg);
  };
  const need = (n: number): string[] => {
    if (positionals.length !== n) throw new UsageError();
    return positionals;
  };
  const int = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new VmcError(-32602, `--${what} must be a positive integer`);
    return n;
  };
  try {
    switch (verb) {
      case "ls":
      case "list": {
        const store = new VmStore(home);
        const rows = await Promise.all(
          store.list().map(async (r) => {
            const s = await driverByName(home, r.driver).status(r.name).catch((e: Error) => ({ name: r.name, driver: r.driver, state: "error" as const, reason: e.message }));
            return { ...s, agentId: r.agentId, memoryMiB: r.memoryMiB, cpus: r.cpus, fromTemplate: Boolean(r.template) };
          }),
        );
        out(rows, () => {
          if (rows.length === 0) return console.log("no VMs");
          console.log(table([["NAME", "STATE", "DRIVER", "ACCEL", "MEMORY", "CPUS", "AGENT"], ...rows.map((r) => [r.name, r.state, r.driver, "accel" in r && r.accel ? r.accel : "", `${r.memoryMiB} MiB`, String(r.cpus), r.agentId])]));
        });
        return 0;
      }
      case "create": {
        const [name] = need(1) as [string];
        const driverName = values.driver ? DriverName.parse(values.driver) : await defaultDriverName();
        const driver = driverByName(home, driverName);
        const broker = parseBrokerUrl(brokerUrl(values.broker));
        const { readControllerPublicKey } = await import("../store/keys");
        const image = driverName === "process" ? undefined : await resolveImage(home, values.image, progress);
        const record = await driver.create({
          name,
          ...(values["agent-id"] ? { agentId: values["agent-id"] } : {}),
          ...(image ? { image } : {}),
          ...(int(values.memory, "memory") ? { memoryMiB: int(values.memory, "memory") } : {}),
          ...(int(values.cpus, "cpus") ? { cpus: int(values.cpus, "cpus") } : {}),
          broker: { host: broker.host, port: broker.port },
          controllerPublicKey: readControllerPublicKey(home),
          fromTemplate: !values["no-template"],
        });
        const status = values.start ? await driver.start(name) : undefined;
        out({ ...record, ...(status ? { status } : {}) }, () => {
          console.log(`created ${record.name} (${record.driver}${record.template ? ", from template" : ""}, ${record.memoryMiB} MiB, ${record.cpus} CPU)`);
          if (status) printStatus(status);
        });
        return 0;
      }
      case "start":
      case "pause":
      case "resume": {
        const [name] = need(1) as [string];
        const driver = driverForVm(home, name);
        const status = verb === "start" ? await driver.start(name) : verb === "pause" ? await driver.pause(name) : await driver.resume(name);
        out(status, () => printStatus(status));
        return 0;
      }
      case "stop": {
        const [name] = need(1) as [string];
        const timeout = values.timeout === undefined ? undefined : Number(values.timeout) * 1000;
        const status = await driverForVm(home, name).stop(name, { ...(timeout !== undefined && Number.isFinite(timeout) ? { timeoutMs: timeout } : {}), force: values.force });
        out(status, () => printStatus(status));
        return 0;
      }
      case "rm":
      case "delete": {
        const [name] = need(1) as [string];
        await driverForVm(home, name).delete(name, { force: values.force });
        out({ name, deleted: true }, () => console.log(`deleted ${name}`));
        return 0;
      }
      case "snapshot": {
        const [name, snap] = need(2) as [string, string];
        const info = await driverForVm(home, name).takeSnapshot(name, snap);
        out(info, () => console.log(`snapshot ${snap} of ${name} taken${info.withMemory ? " (with memory)" : " (disk only)"}`));
        return 0;
      }
      case "restore": {
        const [name, snap] = need(2) as [string, string];
        const status = await driverForVm(home, name).restoreSnapshot(name, snap);
        out(status, () => printStatus(status));
        return 0;
      }
      case "snapshots": {
        const [name] = need(1) as [string];
        const list = await driverForVm(home, name).listSnapshots(name);
        out(list, () => {
          if (list.length === 0) return console.log(`${name} has no snapshots`);
          console.log(table([["NAME", "TAKEN", "MEMORY"], ...list.map((s) => [s.name, new Date(s.createdAt).toISOString(), s.withMemory ? `${Math.round((s.vmStateBytes ?? 0) / 1048576)} MiB` : "disk only"])]));
        });
        return 0;
      }
      case "snapshot-rm": {
        const [name, snap] = need(2) as [string, string];
        await driverForVm(home, name).deleteSnapshot(name, snap);
        out({ name, snapshot: snap, deleted: true }, () => console.log(`deleted snapshot ${snap} of ${name}`));
        return 0;
      }
      case "template": {
        need(0);
        const image = await resolveImage(home, values.image, progress);
        const { buildTemplate } = await import("../hypervisors/qemu/template");
        progress("booting the guest once to save an agent-ready template...");
        const t = await buildTemplate(home, image, { ...(int(values.memory, "memory") ? { memoryMiB: int(values.memory, "memory") } : {}), ...(int(values.cpus, "cpus") ? { cpus: int(values.cpus, "cpus") } : {}) });
        out(t, () => console.log(`template ready: ${t.dir} (${t.memoryMiB} MiB, ${t.accel}, state ${Math.round(t.stateBytes / 1048576)} MiB, booted in ${t.bootMs} ms)`));
        return 0;
      }
      case "watch": {
        const [name] = need(1) as [string];
        const driver: Driver = driverForVm(home, name);
        const initial = await driver.status(name);
        out(initial, () => printStatus(initial));
        await new Promise<void>((resolve) => {
          void driver.watch(name, (e) => {
            if (json) console.log(JSON.stringify(e));
            else console.log(`${new Date(e.at).toISOString()} ${e.name}: ${e.state} (${e.cause})`);
            if (e.state === "stopped") resolve();
          });
          process.once("SIGINT", () => resolve());
        });
        return 0;
      }
      default:
        console.error(USAGE);
        return verb ? 2 : 0;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(USAGE);
      return 2;
    }
    if (err instanceof VmcError) {
      if (json) console.log(JSON.stringify({ error: { code: err.code, message: err.message, data: err.data ?? {} } }, null, 2));
      else console.error(`vmc vm ${verb}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

class UsageError extends Error {}
