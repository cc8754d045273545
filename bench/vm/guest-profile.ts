/**
 * bench/vm/guest-profile.ts: where a cold boot spends the guest's CPU, by function.
 * `node --import tsx bench/vm/guest-profile.ts [intervalMs=5] [top=25]` boots the guest image
 * without a template and, until the agent's HELLO, samples the vCPU: QMP `stop`, `info registers`,
 * `cont` (a stopped TCG vCPU has its program counter at a block boundary, so the sample is exact).
 * Kernel addresses are named from the image's vmlinux, the agent's from Node's binary (not PIE, so
 * its addresses are fixed) read out of the system disk; shared libraries and busybox are counted
 * as such. The report splits at the first sample in the agent's Node.
 * Sampling slows the boot (~1.5x, the clock stops too); the shares are what it is for.
 * Needs `nm` (binutils) and `debugfs` (e2fsprogs).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { QmpClient } from "@vmc/server/hypervisors/qemu/qmp";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker } from "../../test/harness/embedded-broker";
import { freePort } from "../../test/harness/ports";
import { removeHome, startController, tempHome, testImage } from "../../test/vm/harness";

const intervalMs = Number(process.argv[2] ?? 5);
const top = Number(process.argv[3] ?? 25);
const BUSYBOX = "(other user code: busybox, ...)";

/** Function symbols of an ELF file, sorted by address, for {@link nameOf}. */
function symbols(file: string): { at: bigint[]; names: string[] } {
  const at: bigint[] = [];
  const names: string[] = [];
  const out = execFileSync("nm", ["-n", "-C", "--defined-only", file], { encoding: "utf8", maxBuffer: 256 << 20 });
  for (const line of out.split("\n")) {
    const m = /^([0-9a-f]+) [tTwW] (.+)$/.exec(line);
    if (m) {
      at.push(BigInt(`0x${m[1]}`));
      names.push(m[2]!.slice(0, 100));
    }
  }
  return { at, names };
}

function nameOf(table: { at: bigint[]; names: string[] }, pc: bigint): string | undefined {
  let lo = 0;
  let hi = table.at.length - 1;
  if (hi < 0 || pc < table.at[0]! || pc > table.at[hi]! + 0x100000n) return undefined;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (table.at[mid]! <= pc) lo = mid;
    else hi = mid - 1;
  }
  return table.names[lo];
}

const home = tempHome("vmc-guest-profile-");
const scratch = mkdtempSync(join(tmpdir(), "vmc-guest-profile-syms-"));
const broker = await startEmbeddedBroker({ port: await freePort() });
const c = await startController(home, broker.url);
const driver = new QemuDriver(home);
try {
  const image = await testImage();
  const node = join(scratch, "node");
  execFileSync("debugfs", ["-R", `dump /bin/node ${node}`, image.rootfs], { stdio: "ignore" });
  const kernel = symbols(image.kernel);
  const user = symbols(node);
  const name = `prof${Date.now().toString(36)}`;
  await driver.create({ name, image, memoryMiB: 512, broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: loadOrCreateControllerKeys(home).publicKey, fromTemplate: false });
  const t0 = performance.now();
  await driver.start(name);
  const qmp = await QmpClient.connect(driver.files(name).qmp);
  let done = false;
  const hello = c.waitHello(name, 180_000, Date.now() - 60_000).then(() => (done = true));
  const samples: string[] = [];
  while (!done) {
    await qmp.execute("stop");
    const regs = String(await qmp.execute("human-monitor-command", { "command-line": "info registers" }));
    await qmp.execute("cont");
    const pc = BigInt(`0x${/RIP=([0-9a-f]+)/.exec(regs)?.[1] ?? "0"}`);
    const what = /HLT=1/.test(regs) ? "(idle: halted)"
      : pc >= 0xffffffff80000000n ? `kernel ${nameOf(kernel, pc) ?? "?"}`
      : (nameOf(user, pc) ?? (pc >= 0x7f0000000000n ? "(shared libraries)" : BUSYBOX));
    samples.push(what);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  await hello;
  const helloMs = performance.now() - t0;
  qmp.close();
  await driver.delete(name, { force: true });
  console.log(`HELLO ${helloMs.toFixed(0)} ms after start (sampling slows it), ${samples.length} samples every ${intervalMs} ms`);
  // The agent's start: its Node's first sample (busybox is static, so shared libraries are Node's).
  const split = samples.findIndex((s) => !s.startsWith("kernel") && !s.startsWith("(idle") && s !== BUSYBOX);
  const phases: [string, typeof samples][] = [
    ["until the agent's Node runs its first instruction (kernel, /init)", split < 0 ? samples : samples.slice(0, split)],
    ["from there to HELLO", split < 0 ? [] : samples.slice(split)],
  ];
  for (const [title, list] of phases) {
    const counts = new Map<string, number>();
    for (const s of list) counts.set(s, (counts.get(s) ?? 0) + 1);
    const kinds = new Map<string, number>();
    for (const s of list) {
      const kind = s.startsWith("kernel") ? "kernel" : s.startsWith("(") ? s : "node (V8, Node, OpenSSL, ICU, JS builtins)";
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
    const pct = (n: number) => `${((100 * n) / Math.max(1, list.length)).toFixed(1).padStart(5)} %`;
    console.log(`\n${title}: ${list.length} samples`);
    for (const [k, n] of [...kinds].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(n)}  ${k}`);
    console.log("  top functions:");
    for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(n)}  ${k}`);
  }
} finally {
  await c.close().catch(() => undefined);
  await broker.stop();
  removeHome(home);
  rmSync(scratch, { recursive: true, force: true });
}
