/**
 * bench/rpc: what the JSON-RPC layer costs, measured in one run against the direct bus figure.
 *
 * - `vm.list` through `vmc rpc` (ndjson and LSP framing): p50 one at a time, and requests/s with
 *   32 in flight;
 * - `cmd.run` of `true` with `wait: true` on one agent (a real `vmc agent` process) through
 *   `vmc rpc`, against the same round trip through `fleet.run` directly (as bench/exec does),
 *   interleaved in blocks of 10 so a busy machine affects both alike. Overhead = rpc p50 / direct p50.
 *
 * `npm run bench -- rpc`. Env: BENCH_RPC_N (round trips per figure, default 200).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { BusClient } from "@vmc/server/bus/client";
import { Fleet } from "@vmc/server/fleet/fleet";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, vmcBundle } from "../../test/harness/embedded-broker";
import { startEndpoint, type RpcProcess } from "../../test/rpc/harness";

const N = Number(process.env.BENCH_RPC_N ?? 200);
const groups: ChildProcess[] = [];
process.on("exit", () => {
  for (const c of groups) {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

function p50(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timed(once: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await once();
  return performance.now() - t0;
}

/** Requests per second with `inFlight` outstanding, over `total` requests. */
async function throughput(total: number, inFlight: number, once: () => Promise<void>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < total) await once();
    }),
  );
  return (total * 1000) / (performance.now() - t0);
}

async function main(): Promise<void> {
  const home = mkdtempSync(join(tmpdir(), "vmc-bench-rpc-"));
  const broker = await startEmbeddedBroker();
  const endpoints: RpcProcess[] = [];
  try {
    const keys = loadOrCreateControllerKeys(home);
    const agent = spawn(process.execPath, [vmcBundle, "agent", "--id", "bench-agent", "--broker", broker.url, "--key", keys.publicKey, "--state-dir", join(home, "agent")], {
      detached: true,
      stdio: ["ignore", "ignore", "ignore"],
      env: { ...process.env, VMC_HOME: join(home, "agent-home") },
    });
    groups.push(agent);

    const bus = new BusClient({ brokerUrl: broker.url, name: "bench-direct", log: () => {} });
    await bus.connect(30_000);
    const fleet = await Fleet.open({ bus, keys, log: () => {} });
    const deadline = Date.now() + 30_000;
    while (fleet.registry.get("bench-agent")?.state !== "online") {
      if (Date.now() > deadline) throw new Error("the agent did not come online");
      await fleet.discover({ quietMs: 200, firstAnswerMs: 1000, maxMs: 2000 });
    }
    const direct = async () => {
      const run = await fleet.run({ target: "bench-agent", argv: ["true"] });
      const report = await run.done;
      if (report.targets[0]?.status !== "succeeded") throw new Error(`direct run: ${JSON.stringify(report.targets[0])}`);
    };

    const ndjson = await startEndpoint("rpc-ndjson", { home, broker: broker.url });
    const lsp = await startEndpoint("rpc-lsp", { home, broker: broker.url });
    endpoints.push(ndjson, lsp);
    for (const e of endpoints) await e.request("agent.list", { discover: true });
    for (const e of endpoints) await e.request("vm.create", { name: `bench-vm-${e.framing}`, driver: "process" });
    const viaRpc = (e: RpcProcess) => async () => {
      const r = await e.request<{ targets: Array<{ status: string }> }>("cmd.run", { target: "bench-agent", argv: ["true"], wait: true, stream: false });
      if (r.targets[0]?.status !== "succeeded") throw new Error(`rpc run: ${JSON.stringify(r.targets[0])}`);
    };
    const list = (e: RpcProcess) => async () => {
      await e.request("vm.list");
    };

    // warm-up
    for (let i = 0; i < 10; i++) {
      await direct();
      await viaRpc(ndjson)();
      await viaRpc(lsp)();
      await list(ndjson)();
    }
    const samples = { direct: [] as number[], ndjson: [] as number[], lsp: [] as number[], listNd: [] as number[], listLsp: [] as number[] };
    for (let block = 0; block < N / 10; block++) {
      for (let i = 0; i < 10; i++) samples.direct.push(await timed(direct));
      for (let i = 0; i < 10; i++) samples.ndjson.push(await timed(viaRpc(ndjson)));
      for (let i = 0; i < 10; i++) samples.lsp.push(await timed(viaRpc(lsp)));
      for (let i = 0; i < 10; i++) samples.listNd.push(await timed(list(ndjson)));
      for (let i = 0; i < 10; i++) samples.listLsp.push(await timed(list(lsp)));
    }
    const listRate = await throughput(N * 5, 32, list(ndjson));
    const runRateDirect = await throughput(N, 8, direct);
    const runRateRpc = await throughput(N, 8, viaRpc(ndjson));

    const d = p50(samples.direct);
    const rows: string[][] = [
      ["figure", "p50 ms", "req/s (1 in flight)", "p50 / direct"],
      ["fleet.run `true` (direct bus)", d.toFixed(2), (1000 / d).toFixed(0), "1.00"],
      ["cmd.run `true` wait:true, vmc rpc ndjson", p50(samples.ndjson).toFixed(2), (1000 / p50(samples.ndjson)).toFixed(0), (p50(samples.ndjson) / d).toFixed(2)],
      ["cmd.run `true` wait:true, vmc rpc lsp", p50(samples.lsp).toFixed(2), (1000 / p50(samples.lsp)).toFixed(0), (p50(samples.lsp) / d).toFixed(2)],
      ["vm.list (1 VM), vmc rpc ndjson", p50(samples.listNd).toFixed(2), (1000 / p50(samples.listNd)).toFixed(0), ""],
      ["vm.list (1 VM), vmc rpc lsp", p50(samples.listLsp).toFixed(2), (1000 / p50(samples.listLsp)).toFixed(0), ""],
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    console.log(`bench/rpc: N=${N} per figure, ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  "));
    console.log("");
    console.log(`vm.list, 32 in flight (ndjson): ${listRate.toFixed(0)} req/s`);
    console.log(`cmd.run true, 8 in flight: direct ${runRateDirect.toFixed(0)}/s, vmc rpc ${runRateRpc.toFixed(0)}/s (ratio ${(runRateRpc / runRateDirect).toFixed(2)})`);
    await fleet.close();
    await bus.close();
  } finally {
    for (const e of endpoints) await e.kill();
    for (const c of groups) {
      try {
        process.kill(-c.pid!, "SIGKILL");
      } catch {
        // gone
      }
    }
    const { ProcessDriver } = await import("@vmc/server/hypervisors/process/driver");
    const driver = new ProcessDriver(home);
    for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
    await broker.stop();
    rmSync(home, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
