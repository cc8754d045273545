/**
 * bench/vm/boot-trace.ts: where a cold boot's time goes, on the host's clock.
 * `node --import tsx bench/vm/boot-trace.ts [runs] [extra kernel words]` boots the guest image
 * without a template and stamps every console line as it appears (polled every 5 ms), up to the
 * agent's HELLO at the controller. Extra words (e.g. `loglevel=7 printk.time=1`) replace `quiet
 * loglevel=3`, so the kernel's own steps show too; `vmc_agent_trace=1` shows the agent's. Each run
 * also says how fast the host was just before it, and QEMU's CPU time and the host's steal during it.
 * VMC_BOOT_TRACE_IMAGES=dir1,dir2 boots those built images (`$VMC_HOME/images/<id>`) in turn
 * instead, `runs` times each: a same-run A/B of two layouts.
 * It ends with each image's medians: QEMU start → HELLO, and the agent's start → HELLO.
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { QmpClient } from "@vmc/server/hypervisors/qemu/qmp";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker } from "../../test/harness/embedded-broker";
import { freePort } from "../../test/harness/ports";
import { removeHome, startController, tempHome, testImage } from "../../test/vm/harness";
import { imageFromDir, median } from "./images";

const runs = Number(process.argv[2] ?? 1);
const extra = process.argv.slice(3).join(" ");
const home = tempHome("vmc-boot-trace-");
const broker = await startEmbeddedBroker({ port: await freePort() });
const c = await startController(home, broker.url);
const driver = new QemuDriver(home);
const key = loadOrCreateControllerKeys(home).publicKey;

/** A random cycle through 32 MiB, for {@link hostSpeed}'s memory latency. */
const chain = (() => {
  const n = 8 << 20;
  const next = new Uint32Array(n);
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  let seed = 12345;
  for (let i = n - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  for (let i = 0; i < n; i++) next[order[i]!] = order[(i + 1) % n]!;
  return next;
})();

/**
 * This host's speed just before a boot: ms for a fixed loop of plain CPU work (~210 ms here), for
 * 1M dependent loads from 32 MiB (memory latency: ~95-150 ms in quiet spells, 180-500 ms in slow
 * ones), and to touch 128 MiB of fresh memory (~70-100 ms; QEMU touches ~330 MiB in a boot). The
 * shared machine slows down by half and more for minutes at a time; QEMU's CPU time grows with it
 * while plain CPU work does not.
 */
function hostSpeed(): string {
  let t = performance.now();
  let x = 0;
  for (let i = 0; i < 5e7; i++) x = (x + i * 7) % 1000003;
  const cpu = performance.now() - t;
  t = performance.now();
  let p = 0;
  for (let i = 0; i < 1e6; i++) p = chain[p]!;
  const latency = performance.now() - t;
  t = performance.now();
  const fresh = Buffer.allocUnsafeSlow(128 << 20);
  for (let i = 0; i < fresh.length; i += 4096) fresh[i] = x + p;
  return `cpu ${cpu.toFixed(0)} ms, memory latency ${latency.toFixed(0)} ms, fresh memory ${(performance.now() - t).toFixed(0)} ms`;
}

/** The host's steal time so far, in clock ticks (1/100 s), all CPUs. */
function stealTicks(): number {
  return Number(readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/)[8]);
}

/** TCG's translation cache figures (a flush during the boot means code translated twice). */
async function tbCount(name: string): Promise<string> {
  const qmp = await QmpClient.connect(driver.files(name).qmp);
  try {
    const jit = String(await qmp.execute("human-monitor-command", { "command-line": "info jit" }));
    return `info jit: ${jit.split("\n").filter((l) => /TB count|flush count|gen code size/i.test(l)).map((l) => l.trim().replace(/\s+/g, " ")).join("; ")}`;
  } finally {
    qmp.close();
  }
}

try {
  const dirs = process.env.VMC_BOOT_TRACE_IMAGES?.split(",").filter(Boolean) ?? [];
  const bases = dirs.length ? dirs.map(imageFromDir) : [await testImage()];
  const results = new Map<string, { hello: number; agent: number }[]>(bases.map((b) => [b.id, []]));
  for (let i = 0; i < runs * bases.length; i++) {
    const base = bases[i % bases.length]!;
    const image = extra ? { ...base, cmdline: `${/loglevel=/.test(extra) ? base.cmdline.replace("quiet loglevel=3", "") : base.cmdline} ${extra}`.trim() } : base;
    const name = `boot${Date.now().toString(36)}`;
    const marks: string[] = [];
    const load = loadavg()[0]!;
    const speed = hostSpeed();
    const steal0 = stealTicks();
    await driver.create({ name, image, memoryMiB: 512, broker: { host: "127.0.0.1", port: broker.port }, controllerPublicKey: key, fromTemplate: false });
    const t0 = performance.now();
    let agentStart = Number.NaN;
    const mark = (what: string) => {
      const at = performance.now() - t0;
      if (Number.isNaN(agentStart) && what.includes("vmc-init: agent start")) {
        agentStart = at;
        // How much the kernel and init translated, against the total at HELLO.
        void tbCount(name).then((tbs) => mark(`(at agent start) ${tbs}`));
      }
      marks.push(`${at.toFixed(1).padStart(8)} ms  ${what}`);
    };
    const consoleFile = driver.files(name).console;
    let seen = 0;
    const readConsole = () => {
      try {
        const text = readFileSync(consoleFile, "latin1");
        const lines = text.slice(seen).split("\n");
        const complete = lines.slice(0, -1);
        for (const line of complete) if (line.trim()) mark(`console: ${line.slice(0, 140)}`);
        seen += complete.reduce((n, l) => n + l.length + 1, 0);
      } catch {
        // not yet
      }
    };
    const poll = setInterval(readConsole, 5);
    await driver.start(name);
    mark("start() returned (QEMU daemonized)");
    await c.waitHello(name, 180_000, Date.now() - 60_000);
    mark("HELLO at the controller");
    const hello = performance.now() - t0;
    const jit = await tbCount(name);
    const pid = (await driver.status(name)).pid!;
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(rollup)?.[1] ?? 0);
    mark(`QEMU RSS ${(kib("Rss") / 1024).toFixed(0)} MiB, of which in huge pages ${(kib("AnonHugePages") / 1024).toFixed(0)} MiB`);
    mark(jit);
    // QEMU's CPU time against the wall clock, and the host's steal time: a slow boot that used no
    // more CPU waited (for the host); one that used more ran on a slower CPU.
    const [utime, stime] = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ").slice(11, 13).map(Number);
    mark(`QEMU CPU ${(((utime ?? 0) + (stime ?? 0)) * 10).toFixed(0)} ms (user ${(utime ?? 0) * 10}), host steal ${((stealTicks() - steal0) * 10).toFixed(0)} ms`);
    clearInterval(poll);
    readConsole();
    console.log(`\nrun ${i + 1}, image ${image.id}, load ${load.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}, host speed: ${speed}`);
    for (const m of marks) console.log(m);
    results.get(base.id)!.push({ hello, agent: hello - agentStart });
    await driver.delete(name, { force: true });
  }
  const list = (xs: number[]) => `median ${median(xs).toFixed(0)} ms (${xs.map((x) => x.toFixed(0)).join(", ")})`;
  console.log("");
  for (const [id, rs] of results) {
    console.log(`image ${id}: HELLO ${list(rs.map((r) => r.hello))}; agent start → HELLO ${list(rs.map((r) => r.agent))}`);
  }
} finally {
  await c.close().catch(() => undefined);
  await broker.stop();
  removeHome(home);
}
