/**
 * Instant machines. A template is a guest booted once until its agent waits for an identity
 * (cmdline word `vmc_identity=wait`, see ./identity), then saved: its disk overlay (made
 * read-only) and its machine state (a migration stream). A clone's disk is an overlay of the
 * template's disk and its first start is `-incoming` from the saved state, then the driver
 * writes the clone's identity to the identity port. Templates live in
 * `$VMC_HOME/templates/<image id>-m<MiB>-c<cpus>-<accel>/` and are keyed by everything that must
 * match for the machine state to load.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { writeAtomic } from "../../store/vms";
import type { BootImage } from "../driver";
import { hypervisorFailed } from "../errors";
import { cachedAccel, chooseAccel } from "./accel";
import { MACHINE_VERSION, machineFor, overlayArgs, qemuArgs, type Accel } from "./command";
import { QEMU_SYSTEM, qemuImg, run } from "./exec";
import { IdentityPort } from "./identity";
import { overlayPrototype } from "./overlay";
import { QmpClient } from "./qmp";

export interface Template {
  dir: string;
  imageId: string;
  memoryMiB: number;
  cpus: number;
  accel: Accel;
  /** The kernel command line the template booted with; clones reuse it. */
  cmdline: string;
  disk: string;
  state: string;
  stateBytes: number;
  createdAt: number;
  /** Milliseconds from QEMU start until the agent waited for its identity. */
  bootMs: number;
  /** Machine layout version the state was saved from (absent: 1). */
  machine?: number;
  /**
   * The template's guest RAM as a file. Present: `state` holds only the devices (saved with
   * `x-ignore-shared`) and a clone maps this file copy-on-write instead of loading its RAM
   * from the stream. Absent (older templates): `state` holds the RAM too.
   */
  ram?: string;
}

export const TEMPLATE_WORD = "vmc_identity=wait";

export function templatesRoot(home: string): string {
  return join(home, "templates");
}

export function templateKey(imageId: string, memoryMiB: number, cpus: number, accel: Accel): string {
  return `${imageId}-m${memoryMiB}-c${cpus}-${accel}-v${MACHINE_VERSION}`;
}

/** The template matching an image and machine size, when one has been built. */
export function findTemplate(home: string, imageId: string, memoryMiB: number, cpus: number): Template | undefined {
  const accels: Accel[] = [cachedAccel(home)?.accel ?? "tcg"];
  for (const accel of accels) {
    const dir = join(templatesRoot(home), templateKey(imageId, memoryMiB, cpus, accel));
    try {
      const t = JSON.parse(readFileSync(join(dir, "template.json"), "utf8")) as Template;
      if (existsSync(t.disk) && existsSync(t.state)) return t;
    } catch {
      // none
    }
  }
  return undefined;
}

export function listTemplates(home: string): Template[] {
  let names: string[] = [];
  try {
    names = readdirSync(templatesRoot(home)).filter((n) => !n.startsWith("."));
  } catch {
    return [];
  }
  const out: Template[] = [];
  for (const n of names) {
    try {
      out.push(JSON.parse(readFileSync(join(templatesRoot(home), n, "template.json"), "utf8")) as Template);
    } catch {
      // incomplete
    }
  }
  return out;
}

/**
 * Boots `image` until its agent waits for an identity and saves it as a template (returns the
 * existing one when already built). Needs no broker: the template agent never connects.
 */
export async function buildTemplate(home: string, image: BootImage, opts: { memoryMiB?: number; cpus?: number; timeoutMs?: number } = {}): Promise<Template> {
  const memoryMiB = opts.memoryMiB ?? 512;
  const cpus = opts.cpus ?? 1;
  const accel = (await chooseAccel(home)).accel;
  const key = templateKey(image.id, memoryMiB, cpus, accel);
  const finalDir = join(templatesRoot(home), key);
  const existing = findTemplate(home, image.id, memoryMiB, cpus);
  if (existing && existing.accel === accel) return existing;
  mkdirSync(templatesRoot(home), { recursive: true });
  const staging = join(templatesRoot(home), `.new-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(staging);
  const files = {
    disk: join(staging, "disk.qcow2"),
    state: join(staging, "state.bin"),
    ram: join(staging, "ram.bin"),
    pid: join(staging, "qemu.pid"),
    qmp: join(staging, "qmp.sock"),
    events: join(staging, "events.sock"),
    identity: join(staging, "identity.sock"),
    console: join(staging, "console.log"),
  };
  const cmdline = `${image.cmdline} ${TEMPLATE_WORD}`.trim();
  let pid: number | undefined;
  try {
    await qemuImg(overlayArgs(image.baseDisk, files.disk), "create the template disk");
    const started = Date.now();
    const rootfsBytes = statSync(image.rootfs).size;
    const machine = machineFor(rootfsBytes);
    const r = await run(QEMU_SYSTEM, qemuArgs({
      name: `template-${key}`, memoryMiB, cpus, accel, kernel: image.kernel, initrd: image.initrd, append: cmdline,
      rootfs: image.rootfs, rootfsBytes, disk: files.disk, qmpSocket: files.qmp, eventsSocket: files.events, identitySocket: files.identity,
      consoleLog: files.console, pidFile: files.pid, brokerPort: 9, forwards: [], machine,
      ramFile: { path: files.ram, share: true },
    }));
    if (r.code !== 0) throw hypervisorFailed("qemu", "boot the template", r.stderr.trim());
    pid = Number.parseInt(readFileSync(files.pid, "utf8"), 10);
    // Kept connected while the state is saved: the saved guest then blocks in its read of the port
    // (a closed host end reads as EOF, which the agent polls), so a clone reads its identity at once.
    const port = await IdentityPort.open(files.identity);
    let qmp: QmpClient | undefined;
    let bootMs = 0;
    try {
      if (!(await port.waitFor("WAITING", opts.timeoutMs ?? 120_000))) {
        throw hypervisorFailed("qemu", "boot the template", `the guest agent did not ask for an identity (see ${files.console})`);
      }
      bootMs = Date.now() - started;
      qmp = await QmpClient.connect(files.qmp);
      await qmp.execute("stop");
      // x-ignore-shared: the RAM is already in ram.bin (shared mapping); the stream gets the devices.
      await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "events", state: true }, { capability: "x-ignore-shared", state: true }] });
      const done = qmp.waitEvent("MIGRATION", 120_000, (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)));
      await qmp.execute("migrate", { uri: `exec:cat > '${files.state.replaceAll("'", "'\\''")}'` });
      const e = await done;
      if (e.data?.status !== "completed") throw hypervisorFailed("qemu", "save the template", `migration ${String(e.data?.status)}`);
      await qmp.execute("quit").catch(() => undefined);
      await qmp.closed;
    } finally {
      qmp?.close();
      port.close();
    }
    // A clone's disk is an overlay of this one: it must never change again.
    chmodSync(files.disk, 0o444);
    const template: Template = {
      dir: finalDir, imageId: image.id, memoryMiB, cpus, accel, cmdline,
      disk: join(finalDir, "disk.qcow2"), state: join(finalDir, "state.bin"), stateBytes: statSync(files.state).size,
      createdAt: Date.now(), bootMs, machine, ram: join(finalDir, "ram.bin"),
    };
    writeAtomic(join(staging, "template.json"), `${JSON.stringify(template, null, 2)}\n`);
    for (const f of [files.pid, files.qmp, files.events, files.identity]) rmSync(f, { force: true });
    try {
      renameSync(staging, finalDir);
    } catch {
      // another process finished the same template first: use theirs
      rmSync(staging, { recursive: true, force: true });
      const theirs = findTemplate(home, image.id, memoryMiB, cpus);
      if (theirs) return theirs;
      throw hypervisorFailed("qemu", "save the template", `cannot move it into ${finalDir}`);
    }
    // Clones' disks are copies of one prototype overlay of this disk: made now, not by the first
    // clone (two qemu-img runs). A failure here is the first clone's to report.
    await overlayPrototype(home, template.disk).catch(() => undefined);
    return template;
  } catch (err) {
    if (pid && pid > 0) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Removes a template (clones made from it keep working only while their overlay's backing file exists). */
export function deleteTemplate(template: Template): void {
  rmSync(template.dir, { recursive: true, force: true });
}
