/**
 * bench/transfer: 1 GiB up and down (host → agent, agent → host) through the direct data
 * channel, the bus fallback (embedded broker), SFTP (node-ssh to openssh-server on loopback) and
 * a raw TCP socket (the floor: bytes only, no framing, no hashing). One run each, MB/s and ratios.
 * `VMC_BENCH_XFER_MIB` changes the size (default 1024); `VMC_BENCH_XFER_PATHS` picks paths
 * (comma list of raw, direct, direct-main, bus, sftp; default all). `direct-main` is the direct
 * channel with hashing on the main thread (VMC_TRANSFER_HASH_THREADS=0 on both ends): the
 * before/after of the hash thread pool, measured in the same run.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, mkdtempSync, openSync, closeSync, readFileSync, writeSync, rmSync, statSync } from "node:fs";
import { connect } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pipeline } from "node:stream/promises";
import { generateControllerKeyPair, privateKeyFromPem } from "@vmc/protocol/signing";
import { BusClient } from "@vmc/server/bus/client";
import { TransferClient } from "@vmc/server/transfer/client";
import { SshTransfer } from "@vmc/server/transfer/ssh";
import { startEmbeddedBroker } from "../../test/harness/embedded-broker";
import { freePort } from "../../test/harness/ports";
import { startTransferAgent } from "../../test/transfer/agent-process";
import { sshdInstalled, startSshd } from "../../test/transfer/sshd";

const MIB = 1024 * 1024;
const size = Number(process.env.VMC_BENCH_XFER_MIB ?? 1024) * MIB;
const dir = mkdtempSync(join(tmpdir(), "vmc-bench-xfer-"));
const source = join(dir, "source");
let startLoad = "";
const results: { path: string; up: number; down: number }[] = [];
const paths = new Set((process.env.VMC_BENCH_XFER_PATHS ?? "raw,direct-main,direct,bus,sftp").split(",").map((p) => p.trim()));

function makeSource(): void {
  // Incompressible but cheap to make: one random MiB repeated (nothing in any path dedups).
  const block = randomBytes(MIB);
  const fd = openSync(source, "w");
  for (let at = 0; at < size; at += MIB) writeSync(fd, block, 0, Math.min(MIB, size - at));
  closeSync(fd);
}

/** CPU seconds (user + system, all threads) a process has used so far; undefined when unknown. */
function cpuSeconds(pid?: number): number | undefined {
  if (pid === undefined) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return undefined;
  }
}

/** Runs `fn`, prints and returns MB/s; with `peerPid`, also the CPU both ends spent per GiB moved. */
async function timed(what: string, fn: () => Promise<unknown>, peerPid?: number): Promise<number> {
  const cpu0 = [cpuSeconds(), peerPid === undefined ? undefined : cpuSeconds(peerPid)];
  const t0 = performance.now();
  await fn();
  const s = (performance.now() - t0) / 1000;
  const mbs = size / 1e6 / s;
  const mine = cpuSeconds()! - cpu0[0]!;
  const peer = peerPid === undefined || cpu0[1] === undefined ? undefined : (cpuSeconds(peerPid) ?? NaN) - cpu0[1];
  const perGiB = (x: number) => ((x * 1024 * MIB) / size).toFixed(2);
  const cpu = peer === undefined ? `CPU here ${perGiB(mine)} s/GiB` : `CPU ${perGiB(mine + peer)} s/GiB (here ${perGiB(mine)}, peer ${perGiB(peer)})`;
  console.error(`  ${what}: ${s.toFixed(2)} s, ${mbs.toFixed(0)} MB/s, ${cpu}`);
  return mbs;
}

function clean(...paths: string[]): void {
  for (const p of paths) rmSync(p, { force: true });
}

async function rawTcp(): Promise<void> {
  const peer = spawn(process.execPath, ["--import", "tsx", "bench/transfer/raw-peer.ts"], { detached: true, stdio: ["pipe", "pipe", "inherit"] });
  try {
    const { port } = JSON.parse(await new Promise<string>((r) => createInterface({ input: peer.stdout! }).once("line", r))) as { port: number };
    const remote = join(dir, "raw-remote");
    const back = join(dir, "raw-back");
    const open = async (op: "put" | "get", path: string) => {
      const s = connect({ host: "127.0.0.1", port, noDelay: true });
      await new Promise((r) => s.once("connect", r));
      s.write(`${JSON.stringify({ op, path })}\n`);
      return s;
    };
    const up = await timed("raw TCP up", async () => {
      const s = await open("put", remote);
      await pipeline(createReadStream(source, { highWaterMark: 4 * MIB }), s);
      while (statSync(remote, { throwIfNoEntry: false })?.size !== size) await new Promise((r) => setTimeout(r, 2));
    }, peer.pid);
    const down = await timed("raw TCP down", async () => {
      const s = await open("get", remote);
      await pipeline(s, createWriteStream(back, { highWaterMark: 4 * MIB }));
    }, peer.pid);
    if (statSync(back).size !== size) throw new Error("raw TCP copy incomplete");
    results.push({ path: "raw TCP (floor)", up, down });
    clean(remote, back);
  } finally {
    process.kill(-peer.pid!, "SIGKILL");
  }
}

async function viaClient(label: string, client: TransferClient, target: { agentId: string; dialEndpoint?: { host: string; port: number } }, channel: "direct" | "bus", peerPid?: number): Promise<void> {
  const remote = join(dir, `${channel}-remote`);
  const back = join(dir, `${channel}-back`);
  const up = await timed(`${label} up`, () => client.put(target, source, remote, { channel }), peerPid);
  const down = await timed(`${label} down`, () => client.get(target, remote, back, { channel }), peerPid);
  if (statSync(back).size !== size) throw new Error(`${label} copy incomplete`);
  results.push({ path: label, up, down });
  clean(remote, back);
}

async function main(): Promise<void> {
  startLoad = loadavg().map((l) => l.toFixed(1)).join(" ");
  console.error(`bench/transfer: ${size / MIB} MiB, ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(1)).join(" ")}`);
  makeSource();
  const keys = generateControllerKeyPair();
  const signingKey = privateKeyFromPem(keys.privateKeyPem);

  if (paths.has("raw")) await rawTcp();

  for (const variant of ["direct-main", "direct"] as const) {
    if (!paths.has(variant)) continue;
    const threads = variant === "direct-main" ? "0" : process.env.VMC_TRANSFER_HASH_THREADS;
    const saved = process.env.VMC_TRANSFER_HASH_THREADS;
    setHashThreads(threads);
    const agent = await startTransferAgent({ agentId: "bench.direct", publicKey: keys.publicKey });
    try {
      const client = new TransferClient({ signingKey, deliver: agent.deliver });
      await viaClient(variant === "direct" ? "direct channel" : "direct, hashing on the main thread", client, { agentId: "bench.direct", dialEndpoint: agent.endpoint }, "direct", agent.child.pid);
    } finally {
      agent.kill();
      setHashThreads(saved);
    }
  }

  if (paths.has("bus")) {
    const broker = await startEmbeddedBroker({ port: await freePort() });
    const busAgent = await startTransferAgent({ agentId: "bench.bus", publicKey: keys.publicKey, broker: broker.url });
    const bus = new BusClient({ brokerUrl: broker.url, name: "bench-xfer" });
    try {
      await bus.connect(15_000);
      await viaClient("bus fallback (embedded broker)", new TransferClient({ signingKey, bus }), { agentId: "bench.bus" }, "bus", busAgent.child.pid);
    } finally {
      await bus.close();
      busAgent.kill();
      await broker.stop();
    }
  }

  if (!paths.has("sftp")) {
    // not asked for
  } else if (sshdInstalled()) {
    const sshd = await startSshd();
    const ssh = await SshTransfer.connect({ host: sshd.host, port: sshd.port, username: sshd.username, privateKeyPath: sshd.keyPath });
    try {
      const remote = join(dir, "sftp-remote");
      const back = join(dir, "sftp-back");
      const up = await timed("SFTP up", () => ssh.put(source, remote));
      const down = await timed("SFTP down", () => ssh.get(remote, back));
      results.push({ path: "SFTP (node-ssh, openssh-server)", up, down });
      clean(remote, back);
    } finally {
      ssh.dispose();
      await sshd.stop();
    }
  } else {
    console.error("  SFTP skipped: openssh-server not installed");
  }

  const raw = results.find((r) => r.path.startsWith("raw"));
  const sftp = results.find((r) => r.path.startsWith("SFTP"));
  const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) : "n/a");
  console.log(`\n${size / MIB} MiB, one run each, load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores (started at ${startLoad})\n`);
  console.log("| path | up MB/s | down MB/s | vs raw TCP (up/down) | vs SFTP (up/down) |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of results) {
    console.log(`| ${r.path} | ${r.up.toFixed(0)} | ${r.down.toFixed(0)} | ${ratio(r.up, raw?.up)} / ${ratio(r.down, raw?.down)} | ${ratio(r.up, sftp?.up)} / ${ratio(r.down, sftp?.down)} |`);
  }
  const direct = results.find((r) => r.path === "direct channel");
  const before = results.find((r) => r.path.startsWith("direct, hashing"));
  const busR = results.find((r) => r.path.startsWith("bus"));
  const goal = (ok: boolean) => (ok ? "met" : "NOT met");
  console.log("\ngoals (both directions must pass):");
  if (direct && raw)
    console.log(`  direct ≥ 0.60 × raw TCP: up ${ratio(direct.up, raw.up)}, down ${ratio(direct.down, raw.down)} → ${goal(direct.up >= 0.6 * raw.up && direct.down >= 0.6 * raw.down)}`);
  if (direct && sftp)
    console.log(`  direct ≥ 3.00 × SFTP:    up ${ratio(direct.up, sftp.up)}, down ${ratio(direct.down, sftp.down)} → ${goal(direct.up >= 3 * sftp.up && direct.down >= 3 * sftp.down)}`);
  if (busR) console.log(`  bus ≥ 30 MB/s:           up ${busR.up.toFixed(0)}, down ${busR.down.toFixed(0)} → ${goal(busR.up >= 30 && busR.down >= 30)}`);
  if (direct && before) console.log(`  hash threads vs main-thread hashing (same run): up ×${ratio(direct.up, before.up)}, down ×${ratio(direct.down, before.down)}`);
}

function setHashThreads(value: string | undefined): void {
  if (value === undefined) delete process.env.VMC_TRANSFER_HASH_THREADS;
  else process.env.VMC_TRANSFER_HASH_THREADS = value;
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
