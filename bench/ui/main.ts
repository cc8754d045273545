/**
 * bench/ui: the extension in a real workbench (code-server + Chromium), its controller replaced by
 * a SIMULATION (bench/ui/simulated-controller.ts) that serves N machines and N agents and sends
 * notifications when asked. Measures, for N = 5 and N = 500:
 *   - activation: page navigation → the controller process started (extension activated) →
 *     handshake answered; and opening the VM Controller container → first Machines row shown;
 *   - notification → tree: a `vm.stateChanged` (or `agent.changed`) written by the controller →
 *     the row's new state in the DOM (a MutationObserver in the page timestamps it; same clock).
 * Prints a table with the 500/5 ratios. `npm run bench -- ui` (VMC_UI_BENCH_SAMPLES, default 20).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { build } from "esbuild";
import { chromiumInstalled, codeServerInstalled, node24, repoRoot, startWorkbench, type Workbench } from "../../test/harness/workbench";
import type { SimulationEvent, SimulationRequest } from "./simulated-controller";

const sizes = [5, 500];
const samples = Number.parseInt(process.env.VMC_UI_BENCH_SAMPLES ?? "20", 10);
const vsix = join(repoRoot, "dist", "vm-controller.vsix");

interface Figures {
  machines: number;
  serverStartedMs: number;
  handshakeMs: number;
  firstRowMs: number;
  vmNotifyMs: number[];
  agentNotifyMs: number[];
}

/** The bench's end of the simulation's control connection. */
class Control {
  private socket: Socket | undefined;
  private readonly events: SimulationEvent[] = [];
  private waiters: Array<() => void> = [];
  readonly port: Promise<number>;
  private readonly server = createServer((s) => {
    s.setNoDelay(true);
    this.socket = s;
    createInterface({ input: s }).on("line", (line) => {
      this.events.push(JSON.parse(line) as SimulationEvent);
      for (const w of this.waiters.splice(0)) w();
    });
  });
  constructor() {
    this.port = new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve((this.server.address() as { port: number }).port)));
  }
  /** The first event satisfying `match` (waiting for it up to `timeoutMs`). */
  async next(match: (e: SimulationEvent) => boolean, timeoutMs = 600_000): Promise<SimulationEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex(match);
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error("the simulated controller did not report in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
  send(request: SimulationRequest): void {
    this.socket?.write(`${JSON.stringify(request)}\n`);
  }
  close(): void {
    this.socket?.destroy();
    this.server.close();
  }
}

/** Installs a MutationObserver that timestamps (page clock = Date.now()) the first time a tree row with each watched aria-label appears. */
const installObserver = `(() => {
  window.__seen = {}; window.__watch = new Set();
  const scan = () => { for (const label of window.__watch) { if (window.__seen[label]) continue;
    if (document.querySelector('[role="treeitem"][aria-label="' + label + '"]')) window.__seen[label] = Date.now(); } };
  new MutationObserver(scan).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-label"] });
  window.__scan = scan;
})()`;

async function rowSeen(wb: Workbench, label: string): Promise<number> {
  const handle = await wb.page.waitForFunction(`window.__seen[${JSON.stringify(label)}] || false`, undefined, { timeout: 30_000, polling: 50 });
  return Number(await handle.jsonValue());
}

async function watch(wb: Workbench, label: string): Promise<void> {
  await wb.page.evaluate(`window.__watch.add(${JSON.stringify(label)}); delete window.__seen[${JSON.stringify(label)}]; window.__scan()`);
}

async function measure(machines: number, simulation: string): Promise<Figures> {
  const control = new Control();
  const wb = await startWorkbench({
    name: `bench-ui-${machines}`,
    vsix,
    settings: { "vmc.vmcPath": simulation, "vmc.nodePath": node24 },
    env: { VMC_UI_BENCH_CONTROL: String(await control.port), VMC_UI_BENCH_MACHINES: String(machines) },
  });
  try {
    const origin = Number(await wb.page.evaluate("performance.timeOrigin"));
    const started = await control.next((e) => e.event === "started");
    const handshake = await control.next((e) => e.event === "handshake");
    await wb.page.evaluate(installObserver);
    const first = "Machine sim-000, running";
    await watch(wb, first);
    const opened = Date.now();
    await wb.openContainer("VM Controller");
    const firstRow = await rowSeen(wb, first);
    await wb.shot("machines");

    const vmNotifyMs: number[] = [];
    const agentNotifyMs: number[] = [];
    await wb.view("Agents");
    for (let i = 0; i < samples; i++) {
      const name = "sim-000";
      const state = i % 2 === 0 ? "paused" : "running";
      const label = `Machine ${name}, ${state}`;
      await watch(wb, label);
      control.send({ kind: "vm", name, state });
      const sent = await control.next((e) => e.event === "sent" && e.request.kind === "vm");
      vmNotifyMs.push((await rowSeen(wb, label)) - sent.at);

      const online = i % 2 === 1;
      const agentLabel = `Agent sim-000, ${online ? "online" : "offline"}`;
      await watch(wb, agentLabel);
      control.send({ kind: "agent", agentId: "sim-000", online });
      const agentSent = await control.next((e) => e.event === "sent" && e.request.kind === "agent");
      agentNotifyMs.push((await rowSeen(wb, agentLabel)) - agentSent.at);
    }
    await wb.shot("after-notifications");
    return { machines, serverStartedMs: started.at - origin, handshakeMs: handshake.at - origin, firstRowMs: firstRow - opened, vmNotifyMs, agentNotifyMs };
  } finally {
    await wb.close();
    control.close();
  }
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

async function main(): Promise<number> {
  if (!codeServerInstalled || !chromiumInstalled) {
    console.error("bench/ui needs code-server and chromium: run scripts/provision-workbench");
    return 1;
  }
  const pack = spawnSync("npm", ["run", "package"], { cwd: repoRoot, encoding: "utf8" });
  if (pack.status !== 0 || !existsSync(vsix)) {
    console.error(`npm run package failed:\n${pack.stdout}\n${pack.stderr}`);
    return 1;
  }
  const dir = mkdtempSync(join(tmpdir(), "vmc-bench-ui-"));
  const simulation = join(dir, "simulated-controller.mjs");
  try {
    // vscode-jsonrpc is CommonJS and requires Node built-ins: an ESM bundle needs a real `require`.
    const requireShim = "import { createRequire as __vmcCreateRequire } from 'node:module'; const require = __vmcCreateRequire(import.meta.url);";
    await build({ entryPoints: [join(repoRoot, "bench/ui/simulated-controller.ts")], bundle: true, platform: "node", format: "esm", outfile: simulation, logLevel: "error", banner: { js: requireShim } });
    const results: Figures[] = [];
    for (const n of sizes) results.push(await measure(n, simulation));
    const [small, large] = results as [Figures, Figures];
    const rows: Array<[string, number, number]> = [
      ["navigation → controller started (ms)", small.serverStartedMs, large.serverStartedMs],
      ["navigation → handshake answered (ms)", small.handshakeMs, large.handshakeMs],
      ["open container → first Machines row (ms)", small.firstRowMs, large.firstRowMs],
      ["vm.stateChanged → row, p50 (ms)", pct(small.vmNotifyMs, 50), pct(large.vmNotifyMs, 50)],
      ["vm.stateChanged → row, p95 (ms)", pct(small.vmNotifyMs, 95), pct(large.vmNotifyMs, 95)],
      ["agent.changed → row, p50 (ms)", pct(small.agentNotifyMs, 50), pct(large.agentNotifyMs, 50)],
      ["agent.changed → row, p95 (ms)", pct(small.agentNotifyMs, 95), pct(large.agentNotifyMs, 95)],
    ];
    console.log(`bench/ui — controller SIMULATED (bench/ui/simulated-controller.ts); ${samples} samples per notification kind; load ${(await import("node:os")).loadavg()[0]!.toFixed(1)}`);
    console.log(`${"measure".padEnd(44)}${"5 machines".padStart(12)}${"500 machines".padStart(14)}${"500/5".padStart(8)}`);
    for (const [name, a, b] of rows) console.log(`${name.padEnd(44)}${a.toFixed(0).padStart(12)}${b.toFixed(0).padStart(14)}${(b / a).toFixed(2).padStart(8)}`);
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exit(await main());
