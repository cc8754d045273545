/**
 * bench/vm: the VM lifecycle on real QEMU (TCG unless KVM is usable), one run.
 * `npm run bench -- vm` (VMC_BENCH_QUICK=1 skips the 1 GiB guest and the 4-at-once boot).
 * Prints a table: each figure, its goal, and measured/goal (≤ 1.00 meets the goal), with peers
 * measured in the same run (qemu-img create for the linked clone, cold boot for the template).
 */
import { readFileSync, statSync } from "node:fs";
import { loadavg } from "node:os";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { buildTemplate } from "@vmc/server/hypervisors/qemu/template";
import { chooseAccel } from "@vmc/server/hypervisors/qemu/accel";
import { overlayArgs } from "@vmc/server/hypervisors/qemu/command";
import { run } from "@vmc/server/hypervisors/qemu/exec";
import { QmpClient } from "@vmc/server/hypervisors/qemu/qmp";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker } from "../../test/harness/embedded-broker";
import { freePort } from "../../test/harness/ports";
import { removeHome, startController, tempHome, testImage } from "../../test/vm/harness";
import { median } from "./images";

const quick = process.env.VMC_BENCH_QUICK === "1";
const rows: { what: string; value: number; unit: string; goal?: number; peer?: string }[] = [];
const add = (what: string, value: number, unit: string, goal?: number, peer?: string) => {
  rows.push({ what, value, unit, ...(goal !== undefined ? { goal } : {}), ...(peer ? { peer } : {}) });
  console.error(`  ${what}: ${value.toFixed(unit === "ms" ? 1 : 0)} ${unit}`);
};
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

const home = tempHome("vmc-bench-vm-");
const broker = await startEmbeddedBroker({ port: await freePort() });
const c = await startController(home, broker.url);
const driver = new QemuDriver(home);
const key = loadOrCreateControllerKeys(home).publicKey;
const spec = (name: string, memoryMiB = 512, fromTemplate = false) => ({ name, image, memoryMiB, broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: key, fromTemplate });
let image: Awaited<ReturnType<typeof testImage>>;
const load0 = loadavg()[0]!;
try {
  image = await testImage();
  const accel = await chooseAccel(home);
  console.error(`bench/vm: accel ${accel.accel} (${accel.reason}), load average ${load0.toFixed(1)} on ${(await import("node:os")).cpus().length} CPUs`);

  // Linked clone: our create (prototype copy) vs qemu-img create, the peer.
  await driver.create(spec("warm"));
  const creates: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t = performance.now();
    await driver.create(spec(`clone${i}`));
    creates.push(performance.now() - t);
  }
  const peers: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await run("qemu-img", overlayArgs(image.baseDisk, `${home}/peer${i}.qcow2`));
    peers.push(performance.now() - t);
  }
  add("create (linked clone)", median(creates), "ms", 20, `qemu-img create ${median(peers).toFixed(1)} ms`);

  // Cold boot to the agent's HELLO: one boot swings by seconds on this kind of host, so the median
  // of three (clone0 stays up for the measures below, clone1 and clone2 are deleted).
  const colds: number[] = [];
  for (const name of ["clone0", "clone1", "clone2"]) {
    const t = performance.now();
    await driver.start(name);
    await c.waitHello(name, 180_000);
    colds.push(performance.now() - t);
    if (name !== "clone0") await driver.delete(name, { force: true });
  }
  const cold = median(colds);
  let t: number;
  add("cold boot to agent ready (512 MiB, median of 3)", cold, "ms", 3000, `${colds.map((x) => x.toFixed(0)).join(", ")} ms`);

  // Pause / resume: the driver reuses its monitor connection between calls close together; the
  // peer is a new QMP connection per call with its round trips one after another (the path before).
  const pauses: number[] = [];
  const resumes: number[] = [];
  const freshPauses: number[] = [];
  const freshResumes: number[] = [];
  for (let i = 0; i < 10; i++) {
    t = performance.now();
    await driver.pause("clone0");
    pauses.push(performance.now() - t);
    t = performance.now();
    await driver.resume("clone0");
    resumes.push(performance.now() - t);
  }
  await new Promise((r) => setTimeout(r, 600)); // the cached connection closes when idle
  // The path before: a connection per call (connect, greeting, capabilities, query-status, command).
  const oneShot = async (command: string) => {
    const q = await QmpClient.connect(driver.files("clone0").qmp);
    await q.execute("qmp_capabilities").catch(() => undefined);
    await q.execute("query-status");
    await q.execute(command);
    q.close();
  };
  for (let i = 0; i < 5; i++) {
    t = performance.now();
    await oneShot("stop");
    freshPauses.push(performance.now() - t);
    t = performance.now();
    await oneShot("cont");
    freshResumes.push(performance.now() - t);
  }
  add("pause", median(pauses), "ms", 5, `new connection each call ${median(freshPauses).toFixed(1)} ms`);
  add("resume", median(resumes), "ms", 5, `new connection each call ${median(freshResumes).toFixed(1)} ms`);

  // Idle memory: let the guest settle on its own, measured by the host.
  await c.sh("clone0", "sleep 3");
  add("host memory per idle VM (RSS, 512 MiB guest)", rssMiB((await driver.status("clone0")).pid!), "MiB", 350);

  // Snapshots per guest size.
  const sizes = quick ? [256, 512] : [256, 512, 1024];
  for (const mib of sizes) {
    const name = mib === 512 ? "clone0" : `size${mib}`;
    if (mib !== 512) {
      await driver.create(spec(name, mib));
      await driver.start(name);
      await c.waitHello(name, 180_000);
    }
    const takes: number[] = [];
    const restores: number[] = [];
    for (let i = 0; i < 3; i++) {
      t = performance.now();
      await driver.takeSnapshot(name, `s${i}`);
      takes.push(performance.now() - t);
      t = performance.now();
      await driver.restoreSnapshot(name, `s${i}`);
      restores.push(performance.now() - t);
    }
    const bytes = (await driver.listSnapshots(name))[0]?.vmStateBytes ?? 0;
    add(`snapshot take, ${mib} MiB guest (${Math.round(bytes / 1048576)} MiB state)`, median(takes), "ms", mib === 512 ? 350 : undefined);
    add(`snapshot restore in place, ${mib} MiB guest`, median(restores), "ms", mib === 512 ? 500 : undefined);
    if (mib !== 512) await driver.delete(name, { force: true });
  }

  // Instant machines: template once, then create-and-ready.
  t = performance.now();
  const template = await buildTemplate(home, image, { memoryMiB: 512, cpus: 1 });
  add("template build (boot once + save)", performance.now() - t, "ms");
  // Clones one after another (each deleted before the next): one sample swings with the shared
  // machine's load by more than the changes measured, so the median of several is reported.
  const runnings: number[] = [];
  const readies: number[] = [];
  for (let i = 0; i < 5; i++) {
    const name = `fast${i}`;
    t = performance.now();
    await driver.create(spec(name, 512, true));
    await driver.start(name);
    runnings.push(performance.now() - t);
    await c.waitHello(name, 60_000, Date.now() - 5 * 60_000);
    readies.push(performance.now() - t);
    await driver.delete(name, { force: true });
  }
  const ready = median(readies);
  const ms = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  const ramMiB = template.ram ? Math.round((statSync(template.ram).blocks * 512) / 1048576) : 0;
  add("from template: create to running (median of 5)", median(runnings), "ms", undefined, `${ms(runnings)} ms; device state ${(template.stateBytes / 1048576).toFixed(1)} MiB${template.ram ? `, RAM file ${ramMiB} MiB mapped copy-on-write` : ""}`);
  add("from template: create to agent ready (median of 5)", ready, "ms", 1000, `${ms(readies)} ms; cold boot ${(cold / 1000).toFixed(1)} s = ${(cold / ready).toFixed(1)}x slower`);

  if (!quick) {
    const four = ["four0", "four1", "four2", "four3"];
    t = performance.now();
    await Promise.all(four.map(async (n) => {
      await driver.create(spec(n));
      await driver.start(n);
      await c.waitHello(n, 300_000);
    }));
    add("4 VMs cold-booting at once, all agents ready", performance.now() - t, "ms", undefined, `one alone ${(cold / 1000).toFixed(1)} s`);
    await Promise.all(four.map((n) => driver.delete(n, { force: true })));
  }
} finally {
  await c.close().catch(() => undefined);
  await broker.stop();
  removeHome(home);
}

const load1 = loadavg()[0]!;
console.log(`\nbench/vm (${new Date().toISOString()}), load average ${load0.toFixed(1)} → ${load1.toFixed(1)}\n`);
const lines = [["measure", "value", "goal", "value/goal", "peer (same run)"], ...rows.map((r) => [r.what, `${r.value.toFixed(r.unit === "ms" && r.value < 100 ? 1 : 0)} ${r.unit}`, r.goal ? `${r.goal} ${r.unit}` : "", r.goal ? (r.value / r.goal).toFixed(2) : "", r.peer ?? ""])];
const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
for (const l of lines) console.log(`| ${l.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`);
