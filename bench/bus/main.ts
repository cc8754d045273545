/**
 * Bus benchmark: the embedded broker and RabbitMQ side by side in one run, through the client VM
 * Controller uses (@stomp/stompjs over a noDelay TCP socket, no client heart-beats).
 *
 * - request/reply: a requester and a responder, 1 KiB bodies both ways, client-individual ack,
 *   one request in flight; latency p50/p99 over the timed requests.
 * - throughput: one producer → one consumer acking every 1 KiB message (client-individual,
 *   prefetch-count 500 on both brokers); messages/s from the first SEND to the last MESSAGE.
 * - idle connections: RSS of the broker's process tree before and after 1,000 connected STOMP
 *   sessions, divided by 1,000.
 *
 * The brokers are measured in alternating rounds and each broker's rounds pooled.
 *
 * Run: `npm run bench -- bus` (env BENCH_BUS_SCALE=0.2 for a quick run).
 */
import { readFileSync, readdirSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { IMessage } from "@stomp/stompjs";
import { embeddedTarget, rabbitMqTarget, type BrokerTarget, type RunningBroker } from "../../test/harness/brokers";
import { openSession, type RawStomp } from "../../test/bus/raw-stomp";
import { connectStompJs, receiptFor, type StompJsSession } from "../../test/bus/stompjs-client";

const scale = Number(process.env.BENCH_BUS_SCALE ?? "1");
const warmup = Math.round(200 * scale);
const requests = Math.round(3000 * scale);
const throughputMessages = Math.round(20_000 * scale);
const idleConnections = 1000;
const rounds = 3;
const body = "x".repeat(1024);

interface Figures {
  p50: number;
  p99: number;
  throughput: number;
  perConnectionKiB: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** RSS in KiB of `pid` and every process in its process group (the broker's tree). */
function groupRssKiB(pgid: number): number {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) !== pgid) continue;
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${entry}/status`, "utf8"));
      if (rss) total += Number(rss[1]);
    } catch {
      // the process went away
    }
  }
  return total;
}

/** One request/reply round: `warmup` untimed then `count` timed requests; returns the latencies (ms). */
async function requestReply(broker: RunningBroker, target: BrokerTarget, count: number): Promise<number[]> {
  const requester = await connectStompJs(broker, target.quirks);
  const responder = await connectStompJs(broker, target.quirks);
  const service = `/queue/bench.rr.${Date.now()}`;
  const replyQueue = `/queue/bench.reply.${Date.now()}`;
  await subscribeWith(
    responder,
    service,
    (m: IMessage) => {
      // A SEND to an x-expires queue must repeat its x-expires (RabbitMQ: precondition_failed).
      responder.client.publish({ destination: m.headers["reply-to"]!, body, headers: { "correlation-id": m.headers["correlation-id"]!, "x-expires": "60000" } });
      m.ack();
    },
    { ack: "client-individual", "prefetch-count": "10" },
  );
  let waiting: ((m: IMessage) => void) | undefined;
  await subscribeWith(
    requester,
    replyQueue,
    (m: IMessage) => {
      m.ack();
      waiting?.(m);
    },
    { ack: "client-individual", "prefetch-count": "10", "x-expires": "60000" },
  );
  const samples: number[] = [];
  for (let i = 0; i < warmup + count; i++) {
    const started = performance.now();
    await new Promise<IMessage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`request ${i}: no reply within 10 s`)), 10_000);
      waiting = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      requester.client.publish({ destination: service, body, headers: { "reply-to": replyQueue, "correlation-id": String(i) } });
    });
    if (i >= warmup) samples.push(performance.now() - started);
  }
  await requester.close();
  await responder.close();
  return samples;
}

/** One throughput round of `count` messages; returns the elapsed seconds. */
async function throughput(broker: RunningBroker, target: BrokerTarget, count: number): Promise<number> {
  const producer = await connectStompJs(broker, target.quirks);
  const consumer = await connectStompJs(broker, target.quirks);
  const q = `/queue/bench.tp.${Date.now()}`;
  let received = 0;
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  await subscribeWith(
    consumer,
    q,
    (m: IMessage) => {
      m.ack();
      if (++received === count) done();
    },
    { ack: "client-individual", "prefetch-count": "500" },
  );
  const started = performance.now();
  await publishAll(producer, q, count);
  const deadline = setTimeout(() => done(), 120_000);
  await finished;
  clearTimeout(deadline);
  const seconds = (performance.now() - started) / 1000;
  if (received < count) throw new Error(`${target.name}: only ${received}/${count} messages in 120 s`);
  await producer.close();
  await consumer.close();
  return seconds;
}

/** Subscribes with a direct handler and waits for the broker's RECEIPT. */
async function subscribeWith(s: StompJsSession, destination: string, handler: (m: IMessage) => void, headers: Record<string, string>): Promise<void> {
  const receipt = `bench-sub-${Math.random().toString(36).slice(2)}`;
  const confirmed = receiptFor(s, receipt);
  s.client.subscribe(destination, handler, { ...headers, receipt });
  await confirmed;
}

/** Publishes `n` messages, yielding to the event loop whenever the socket's buffer fills. */
async function publishAll(s: StompJsSession, destination: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    s.client.publish({ destination, body });
    if (s.socket.writableLength > 1 << 20) await new Promise<void>((r) => s.socket.once("drain", () => r()));
  }
}

async function idleMemory(broker: RunningBroker): Promise<number> {
  const settle = () => new Promise((r) => setTimeout(r, 1500));
  await settle();
  const before = groupRssKiB(broker.pid);
  const sessions: RawStomp[] = [];
  try {
    for (let i = 0; i < idleConnections; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, idleConnections - i) }, () => openSession(broker.host, broker.port)));
      sessions.push(...batch.map((b) => b.client));
    }
    await settle();
    const after = groupRssKiB(broker.pid);
    return (after - before) / idleConnections;
  } finally {
    for (const s of sessions) s.close();
  }
}

/**
 * Measures both brokers in alternating rounds (A, B, A, B, ...) and pools each broker's rounds, so
 * a burst of load from elsewhere on the machine hits both rather than whichever ran at that time.
 */
async function measureAll(targets: BrokerTarget[], brokers: RunningBroker[]): Promise<Figures[]> {
  const latencies: number[][] = targets.map(() => []);
  const seconds = targets.map(() => 0);
  const memory: number[] = [];
  for (let i = 0; i < targets.length; i++) memory.push(await idleMemory(brokers[i]!));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < targets.length; i++) {
      process.stdout.write(`round ${round + 1}/${rounds}: ${targets[i]!.name}\n`);
      latencies[i]!.push(...(await requestReply(brokers[i]!, targets[i]!, Math.round(requests / rounds))));
      seconds[i]! += await throughput(brokers[i]!, targets[i]!, Math.round(throughputMessages / rounds));
    }
  }
  return targets.map((_, i) => {
    const sorted = latencies[i]!.sort((a, b) => a - b);
    return {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      throughput: (Math.round(throughputMessages / rounds) * rounds) / seconds[i]!,
      perConnectionKiB: memory[i]!,
    };
  });
}

async function main(): Promise<number> {
  const targets = [embeddedTarget, rabbitMqTarget];
  for (const t of targets) if (!t.installed()) throw new Error(`${t.name} is not installed (${t.hint})`);
  const brokers = await Promise.all(targets.map((t) => t.start()));
  let results: Figures[];
  try {
    results = await measureAll(targets, brokers);
  } finally {
    await Promise.all(brokers.map((b) => b.stop()));
  }
  const [e, r] = results as [Figures, Figures];
  const rows: Array<[string, string, string, string]> = [
    ["request/reply p50 (ms)", e.p50.toFixed(3), r.p50.toFixed(3), (r.p50 / e.p50).toFixed(2)],
    ["request/reply p99 (ms)", e.p99.toFixed(3), r.p99.toFixed(3), (r.p99 / e.p99).toFixed(2)],
    ["throughput 1 KiB, ack each (msg/s)", e.throughput.toFixed(0), r.throughput.toFixed(0), (e.throughput / r.throughput).toFixed(2)],
    ["memory per idle connection (KiB)", e.perConnectionKiB.toFixed(1), r.perConnectionKiB.toFixed(1), (r.perConnectionKiB / e.perConnectionKiB).toFixed(2)],
  ];
  const header: [string, string, string, string] = ["metric", "embedded", "RabbitMQ 3.10", "advantage (×, >1 = embedded better)"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(
    `\nbus benchmark: ${requests} requests (${warmup} warm-up per round), ${throughputMessages} messages, ${rounds} alternating rounds; ${idleConnections} idle connections`,
  );
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const row of rows) console.log(line(row));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
