/**
 * bench/exec: how fast a command gets to an agent and back, against its peers, in one run.
 *
 * - floor: `true` spawned locally with child_process;
 * - VM Controller: `true` on one agent (a real `vmc agent` process) through the embedded broker
 *   and through RabbitMQ, from a Fleet kept open (as the editor or a BOINC wrapper keeps it);
 * - SSH: `true` through node-ssh on a kept-open connection to Debian's sshd on loopback (our own
 *   sshd: throwaway host and user keys in a temp dir);
 * - fan-out: one `true` to 1,000 agents (hosted 250 per process by bench/exec/agent-host.ts,
 *   sharing one connection per process) until all 1,000 are accounted for.
 *
 * `npm run bench -- exec`. Options (env): BENCH_EXEC_N (round trips per peer, default 200),
 * BENCH_EXEC_FANOUT (agents, default 1000), BENCH_EXEC_SKIP (comma list: rabbitmq,ssh,fanout),
 * BENCH_EXEC_BASELINE (path to another agent bundle, e.g. an older dist/agent.mjs: its round
 * trip is measured on the embedded broker interleaved with this build's, 10 rounds each in turn,
 * so a busy machine affects both alike); BENCH_EXEC_BASELINE_SRC (path to another checkout's
 * agent/src/agent.ts: the fan-out is then run twice per build, alternating, this build first);
 * BENCH_EXEC_PROF_DIR (the fan-out's host processes write V8 CPU profiles there),
 * BENCH_EXEC_PER_HOST (agents per host process, default 250).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { cpus, loadavg, tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { NodeSSH } from "node-ssh";
import { BusClient } from "@vmc/server/bus/client";
import { Fleet } from "@vmc/server/fleet/fleet";
import { parseTarget } from "@vmc/server/fleet/target";
import { loadOrCreateControllerKeys, type ControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker, vmcBundle } from "../../test/harness/embedded-broker";
import { rabbitMqInstalled, startRabbitMq } from "../../test/harness/rabbitmq";
import { freePort } from "../../test/harness/ports";

const N = Number(process.env.BENCH_EXEC_N ?? 200);
const FANOUT = Number(process.env.BENCH_EXEC_FANOUT ?? 1000);
const PER_HOST = Number(process.env.BENCH_EXEC_PER_HOST ?? 250);
const skip = new Set((process.env.BENCH_EXEC_SKIP ?? "").split(",").filter(Boolean));

const groups: ChildProcess[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
function killGroups(): void {
  for (const c of groups) {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }
}
process.on("exit", killGroups);
// Interrupted (Ctrl-C, `timeout`): still take down every process group we started.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killGroups();
    process.exit(130);
  });
}

interface Latency {
  name: string;
  p50: number;
  p99: number;
  mean: number;
  n: number;
}

function summarise(name: string, samples: number[]): Latency {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { name, p50: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length, n: s.length };
}

async function measure(name: string, once: () => Promise<void>, n = N, warmup = 10): Promise<Latency> {
  for (let i = 0; i < warmup; i++) await once();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    samples.push(performance.now() - t0);
  }
  const r = summarise(name, samples);
  process.stderr.write(`  ${name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms\n`);
  return r;
}

function localSpawn(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("true", [], { stdio: "ignore" });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`true exited ${code}`))));
  });
}

function spawnGroup(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  groups.push(child);
  child.stderr!.on("data", () => {});
  return child;
}

function waitLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${timeoutMs} ms: ${text.slice(-500)}`)), timeoutMs);
    child.stdout!.on("data", (c: Buffer) => {
      text += c.toString();
      const m = pattern.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    child.on("exit", (code) => reject(new Error(`exited ${code} before ${pattern}: ${text.slice(-500)}`)));
  });
}

async function openFleet(url: string, keys: ControllerKeys): Promise<{ fleet: Fleet; bus: BusClient }> {
  const bus = new BusClient({ brokerUrl: url, name: "bench", log: () => {} });
  await bus.connect(30_000);
  const fleet = await Fleet.open({ bus, keys, log: () => {} });
  cleanups.push(async () => {
    await fleet.close();
    await bus.close();
  });
  return { fleet, bus };
}

/** Waits until `count` agents matching `pattern` are online in the fleet's registry. */
async function waitAgents(fleet: Fleet, pattern: string, count: number, timeoutMs: number): Promise<number> {
  const target = parseTarget(pattern);
  const t0 = performance.now();
  const known = () => fleet.registry.online().filter((a) => target.terms[0]!.clauses[0]!.regex.test(a.agentId)).length;
  while (known() < count) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`only ${known()} of ${count} agents after ${timeoutMs} ms`);
    await fleet.discover({ quietMs: 300, firstAnswerMs: 2000, maxMs: 10_000 });
  }
  return performance.now() - t0;
}

/** An agent process under test: `args` start it (after the node binary) given id, broker, key and state dir. */
interface AgentUnderTest {
  name: string;
  args: (id: string, url: string, key: string, stateDir: string) => string[];
}

const thisBuild: AgentUnderTest = {
  name: "vmc run",
  args: (id, url, key, stateDir) => [vmcBundle, "agent", "--id", id, "--broker", url, "--key", key, "--state-dir", stateDir],
};

/** Round trips of `true` on one agent per entry of `agents`, interleaved in blocks of 10. */
async function roundTrips(label: string, url: string, home: string, keys: ControllerKeys, agents: AgentUnderTest[]): Promise<Latency[]> {
  const ids = agents.map((_, i) => `bench.rt${i}`);
  agents.forEach((a, i) => spawnGroup(a.args(ids[i]!, url, keys.publicKey, join(home, `agent-${label}-${i}`)), { VMC_HOME: home }));
  const { fleet } = await openFleet(url, keys);
  await waitAgents(fleet, "bench.rt*", agents.length, 30_000);
  const once = async (i: number, parts?: { toStart: number[]; running: number[] }) => {
    const sent = Date.now();
    const run = await fleet.send(parseTarget(ids[i]!), { target: ids[i]!, argv: ["true"] });
    const report = await run.done;
    const t = report.targets[0]!;
    if (!report.ok) throw new Error(`${agents[i]!.name}, ${label}: ${JSON.stringify(t.reason)}`);
    if (parts && t.startedAt !== null) {
      parts.toStart.push(t.startedAt - sent);
      parts.running.push(t.finishedAt - t.startedAt);
    }
  };
  for (let w = 0; w < 10; w++) for (let i = 0; i < agents.length; i++) await once(i);
  const samples = agents.map(() => [] as number[]);
  const parts = agents.map(() => ({ toStart: [] as number[], running: [] as number[] }));
  for (let done = 0; done < N; done += 10) {
    for (let i = 0; i < agents.length; i++) {
      for (let k = 0; k < Math.min(10, N - done); k++) {
        const t0 = performance.now();
        await once(i, parts[i]);
        samples[i]!.push(performance.now() - t0);
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  return agents.map((a, i) => {
    const r = summarise(`${a.name}, ${label}`, samples[i]!);
    process.stderr.write(`  ${r.name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms\n`);
    process.stderr.write(`    (median: sent → agent started it ${median(parts[i]!.toStart)} ms; agent finished it ${median(parts[i]!.running)} ms)\n`);
    return r;
  });
}

async function startSshd(dir: string): Promise<{ port: number; key: string }> {
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const hostKey = join(dir, "host_ed25519");
  const userKey = join(dir, "user_ed25519");
  for (const k of [hostKey, userKey]) {
    const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", k], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr}`);
  }
  // SHLVL=1 makes the login shell a nested one, so bash does not source ~/.bashrc for sshd
  // (Debian's bash does for ssh sessions): a developer machine's rc files (pyenv, nvm...) would
  // otherwise dominate every exec and flatter VM Controller.
  writeFileSync(join(dir, "authorized_keys"), `environment="SHLVL=1" ${readFileSync(`${userKey}.pub`, "utf8")}`, { mode: 0o600 });
  const port = await freePort();
  const config = join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `ListenAddress 127.0.0.1`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `StrictModes no`,
      `UsePAM no`,
      `PasswordAuthentication no`,
      `KbdInteractiveAuthentication no`,
      `PubkeyAuthentication yes`,
      `PermitRootLogin prohibit-password`,
      `PermitUserEnvironment SHLVL`,
      `LogLevel ERROR`,
      "",
    ].join("\n"),
  );
  const sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", config, "-p", String(port)], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  groups.push(sshd);
  let log = "";
  sshd.stderr!.on("data", (c: Buffer) => (log += c.toString()));
  cleanups.push(() => {
    if (log) process.stderr.write(`sshd: ${log.slice(-2000)}\n`);
  });
  return { port, key: readFileSync(userKey, "utf8") };
}

async function sshRoundTrip(dir: string): Promise<Latency> {
  const { port, key } = await startSshd(dir);
  const ssh = new NodeSSH();
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await ssh.connect({ host: "127.0.0.1", port, username: userInfo().username, privateKey: key, readyTimeout: 5000 });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  cleanups.push(() => ssh.dispose());
  return measure("ssh exec (node-ssh, kept-open connection)", async () => {
    const r = await ssh.execCommand("true");
    if (r.code !== 0) throw new Error(`ssh true: ${r.code} ${r.stderr}`);
  });
}

interface FanOut {
  label: string;
  agents: number;
  discoverMs: number;
  sentMs: number;
  fanoutMs: number;
  ok: number;
  statuses: string;
  /** CPU seconds spent during the fan-out (user + system, reaped children included): a figure less at the mercy of other load than the wall time. */
  cpu: { hosts: number; broker: number; controller: number };
}

/** User + system CPU seconds of `pid` and its reaped children (/proc/<pid>/stat fields 14–17). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i]), 0) / 100;
  } catch {
    return 0;
  }
}

let fanRound = 0;
async function fanOut(url: string, brokerPid: number, home: string, keys: ControllerKeys, label = "this build", agentModule?: string): Promise<FanOut> {
  const hosts = Math.ceil(FANOUT / PER_HOST);
  const host = join(import.meta.dirname, "agent-host.ts");
  const prefix = `fan${fanRound++}`;
  const profDir = process.env.BENCH_EXEC_PROF_DIR;
  const profArgs = profDir ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : [];
  const started = performance.now();
  const children = Array.from({ length: hosts }, (_, h) =>
    spawnGroup([...profArgs, "--import", "tsx", host, url, keys.publicKey, join(home, prefix), `${prefix}.${h}`, String(Math.min(PER_HOST, FANOUT - h * PER_HOST)), ...(agentModule ? [agentModule] : [])]),
  );
  await Promise.all(children.map((c) => waitLine(c, /ready \d+/, 180_000)));
  process.stderr.write(`  ${FANOUT} agents (${label}) started in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  const { fleet } = await openFleet(url, keys);
  const t0 = performance.now();
  await waitAgents(fleet, `${prefix}.**`, FANOUT, 60_000);
  const discoverMs = performance.now() - t0;
  const target = parseTarget(`${prefix}.**`);
  const cpu = () => ({ hosts: children.reduce((sum, c) => sum + cpuSeconds(c.pid!), 0), broker: cpuSeconds(brokerPid), controller: cpuSeconds(process.pid) });
  const cpu0 = cpu();
  const t1 = performance.now();
  // A long expiry: on a loaded machine, agents packed 250 to a process may take a while to reach
  // the last command in their inboxes, and the benchmark measures how long, not whether.
  const run = await fleet.send(target, { target: `${prefix}.**`, argv: ["true"], expiresInMs: 300_000 });
  const sentMs = performance.now() - t1;
  const report = await run.done;
  const fanoutMs = performance.now() - t1;
  const cpu1 = cpu();
  const statuses = Object.entries(report.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(", ");
  const reasons = new Map<string, number>();
  for (const t of report.targets) {
    if (t.status === "succeeded") continue;
    const reason = (t.reason ?? t.status).replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, "<time>").replace(/\d+ ms/g, "<n> ms");
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  for (const [reason, n] of reasons) process.stderr.write(`  not succeeded (${n}): ${reason}\n`);
  process.stderr.write(`  fan-out (${label}): ${report.targets.length} agents accounted for in ${fanoutMs.toFixed(0)} ms (${statuses})\n`);
  // A profiled host writes its profile when it exits cleanly (SIGTERM); the others go at once.
  if (profDir) await Promise.all(children.map((c) => new Promise((resolve) => (c.kill("SIGTERM"), c.once("exit", resolve), setTimeout(resolve, 30_000)))));
  for (const c of children) {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }
  const used = { hosts: cpu1.hosts - cpu0.hosts, broker: cpu1.broker - cpu0.broker, controller: cpu1.controller - cpu0.controller };
  return { label, agents: report.targets.length, discoverMs, sentMs, fanoutMs, ok: report.counts.succeeded, statuses, cpu: used };
}

function row(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmc-bench-exec-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const keys = loadOrCreateControllerKeys(dir);
  process.stderr.write(`bench/exec: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}; N=${N}\n`);
  const results: Latency[] = [];
  results.push(await measure("local spawn of true (floor)", localSpawn));

  const embedded = await startEmbeddedBroker();
  cleanups.push(() => embedded.stop());
  const baseline = process.env.BENCH_EXEC_BASELINE;
  const agents = baseline
    ? [thisBuild, { name: `baseline ${baseline}`.slice(0, 40), args: (id: string, url: string, key: string, stateDir: string) => [baseline, "--id", id, "--broker", url, "--key", key, "--state-dir", stateDir] }]
    : [thisBuild];
  results.push(...(await roundTrips("embedded broker", embedded.url, dir, keys, agents)));

  if (!skip.has("rabbitmq") && rabbitMqInstalled()) {
    const rabbit = await startRabbitMq();
    cleanups.push(() => rabbit.stop());
    results.push(...(await roundTrips("RabbitMQ", rabbit.url, dir, keys, [thisBuild])));
  }
  let ssh: Latency | undefined;
  if (!skip.has("ssh") && existsSync("/usr/sbin/sshd")) {
    ssh = await sshRoundTrip(dir);
    results.push(ssh);
  }
  const fans: FanOut[] = [];
  if (!skip.has("fanout")) {
    const baselineSrc = process.env.BENCH_EXEC_BASELINE_SRC;
    for (let round = 0; round < (baselineSrc ? 2 : 1); round++) {
      fans.push(await fanOut(embedded.url, embedded.pid, dir, keys));
      if (baselineSrc) fans.push(await fanOut(embedded.url, embedded.pid, dir, keys, "baseline", baselineSrc));
    }
  }

  const floor = results[0]!;
  const widths = [44, 10, 10, 12, 12];
  const lines = [
    row(["round trip of `true`", "p50 ms", "p99 ms", "p50/spawn", "ssh/this p50"], widths),
    ...results.map((r) =>
      row([r.name, r.p50.toFixed(2), r.p99.toFixed(2), `${(r.p50 / floor.p50).toFixed(2)}x`, ssh ? `${(ssh.p50 / r.p50).toFixed(2)}x` : "-"], widths),
    ),
  ];
  console.log(`\n${lines.join("\n")}`);
  for (const fan of fans) {
    console.log(
      `\nfan-out (${fan.label}): one \`true\` to ${fan.agents} agents (${Math.ceil(FANOUT / PER_HOST)} host processes, ${PER_HOST} agents each): ` +
        `all accounted for in ${fan.fanoutMs.toFixed(0)} ms (${fan.statuses}); the controller signed and sent all ${fan.agents} commands in ` +
        `${fan.sentMs.toFixed(0)} ms; discovery of ${FANOUT} agents took ${fan.discoverMs.toFixed(0)} ms; ` +
        `CPU meanwhile: agent hosts ${fan.cpu.hosts.toFixed(2)} s (their commands included), broker ${fan.cpu.broker.toFixed(2)} s, controller ${fan.cpu.controller.toFixed(2)} s`,
    );
  }
  // The goals, for this build only (the first embedded row, the first fan-out).
  const ours = results[1]!;
  const fan = fans[0];
  const goal = (name: string, measured: string, target: string, met: boolean | undefined) =>
    row([name, measured, target, met === undefined ? "-" : met ? "met" : "NOT met"], [44, 14, 14, 8]);
  console.log(
    [
      "",
      row(["goal (this build, embedded broker)", "measured", "goal", ""], [44, 14, 14, 8]),
      goal("p50 / local spawn p50", `${(ours.p50 / floor.p50).toFixed(2)}x`, "<= 3x", ours.p50 / floor.p50 <= 3),
      goal("ssh p50 / vmc run p50", ssh ? `${(ssh.p50 / ours.p50).toFixed(2)}x` : "-", ">= 5x", ssh ? ssh.p50 / ours.p50 >= 5 : undefined),
      goal(
        `fan-out to ${FANOUT} agents`,
        fan ? `${fan.fanoutMs.toFixed(0)} ms` : "-",
        FANOUT === 1000 ? "<= 2000 ms" : "(goal: 1000)",
        fan && FANOUT === 1000 ? fan.fanoutMs <= 2000 && fan.ok === fan.agents : undefined,
      ),
    ].join("\n"),
  );
  console.log(`load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(" ")} on ${cpus().length} CPUs`);
}

try {
  await main();
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  killGroups();
}
