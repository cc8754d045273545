// Bad input: 10,000+ malformed, truncated, oversized and slow-loris frames, generated from a
// seeded PRNG, thrown from many connections at a running `vmc broker`. Throughout, a
// well-formed requester/responder pair keeps completing request/replies; every bad connection
// ends with an ERROR or a close by the broker; the broker's RSS stays bounded; it is alive at
// the end.
import { after, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { RawClient } from "./raw-client";

const seed = Number(process.env.VMC_FUZZ_SEED ?? 20261125);
const totalCases = 10_000;
const concurrency = 64;
const maxBody = 256 * 1024;
const rssBoundBytes = 400 * 1024 * 1024;
const caseDeadlineMs = 10_000;

let broker: EmbeddedBroker | undefined;
after(async () => {
  await broker?.stop();
});

function mulberry32(a: number): () => number {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Expect = "error" | "error-or-close";
interface Case {
  kind: string;
  /** Bytes sent at once (after connecting). */
  payload: Buffer;
  expect: Expect;
  /** Half-close after sending, so an incomplete frame is ended by the client's FIN. */
  finish: boolean;
  /** Slow-loris: bytes dribbled one per `dribbleMs`. */
  dribble?: Buffer;
  dribbleMs?: number;
}

const CONNECT = "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0";
const connectHb = (hb: string) => `CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:${hb}\n\n\0`;
const templates = [
  "SEND\ndestination:/queue/fuzz.sink\ncontent-type:text/plain\nreceipt:r1\n\nhello world\0",
  "SUBSCRIBE\nid:7\ndestination:/topic/fuzz.*\nack:client-individual\nprefetch-count:3\n\n\0",
  "ACK\nid:T_7@@session-x@@1\n\n\0",
  "BEGIN\ntransaction:tx1\n\n\0SEND\ndestination:/queue/fuzz.sink\ntransaction:tx1\n\nx\0COMMIT\ntransaction:tx1\n\n\0",
  "SEND\ndestination:/topic/fuzz.a\ncontent-length:5\n\na\0b\0c\0",
  "UNSUBSCRIBE\nid:7\n\n\0",
];

function generate(rand: () => number): Case {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
  const word = (n: number) => Array.from({ length: n }, () => String.fromCharCode(65 + Math.floor(rand() * 26))).join("");
  const r = rand();
  const after = (s: string, expect: Expect = "error"): Case => ({ kind: "", payload: Buffer.from(CONNECT + s), expect, finish: false });
  if (r < 0.2) {
    const t = Buffer.from(pick(templates));
    const m = Buffer.from(t);
    const edits = 1 + Math.floor(rand() * 4);
    for (let i = 0; i < edits; i++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
    return { kind: "mutated", payload: Buffer.concat([Buffer.from(CONNECT), m]), expect: "error-or-close", finish: true };
  }
  if (r < 0.3) {
    const t = Buffer.from(pick(templates));
    return { kind: "truncated", payload: Buffer.concat([Buffer.from(CONNECT), t.subarray(0, Math.floor(rand() * (t.length - 1)))]), expect: "error-or-close", finish: true };
  }
  if (r < 0.4) return { kind: "garbage", payload: bytes(1 + Math.floor(rand() * 2000)), expect: "error-or-close", finish: true };
  if (r < 0.47) {
    const which = Math.floor(rand() * 3);
    if (which === 0) return { ...after(`SEND\ndestination:/queue/fuzz.big\ncontent-length:${maxBody + 1 + Math.floor(rand() * 1e6)}\n\n`), kind: "oversized-cl" };
    if (which === 1) return { ...after(`SEND\ndestination:/queue/fuzz.big\n\n${"z".repeat(maxBody + 10)}`), kind: "oversized-body" };
    return { ...after(`SEND\ndestination:/queue/fuzz.big\nx-h:${"h".repeat(70_000)}\n\n\0`), kind: "oversized-header" };
  }
  if (r < 0.49) {
    if (rand() < 0.5) return { kind: "slowloris-connect", payload: Buffer.alloc(0), expect: "error-or-close", finish: false, dribble: Buffer.from(CONNECT.slice(0, 30)), dribbleMs: 150 };
    return { kind: "slowloris-heartbeat", payload: Buffer.from(connectHb("300,0") + "SEND\ndestination:/queue/fuzz"), expect: "error-or-close", finish: false };
  }
  const bad: Array<() => Case> = [
    () => after(`${word(3 + Math.floor(rand() * 8))}\nfoo:bar\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\n${word(6)}\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\nx-e:a\\${pick(["t", "x", "0", "a"])}\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\ncontent-length:${pick(["-1", "abc", "1e3", "0x10", " "])}\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\ncontent-length:3\n\nabcdef\0`),
    () => after(`SEND\nx:y\n\nno destination\0`),
    () => after(`SEND\ndestination:/${word(5).toLowerCase()}/x\n\nbad\0`),
    () => after(`ACK\nid:${word(10)}\n\n\0`),
    () => after(`SUBSCRIBE\nid:1\ndestination:/queue/fuzz.x\nack:${word(4)}\n\n\0`),
    () => after(`COMMIT\ntransaction:${word(4)}\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\n${Array.from({ length: 300 }, (_, i) => `h${i}:v`).join("\n")}\n\n\0`),
    () => ({ kind: "", payload: Buffer.from(`SEND\ndestination:/queue/x\n\nbefore connect\0`), expect: "error", finish: false }),
    () => ({ kind: "", payload: Buffer.from(`CONNECT\naccept-version:9.9\n\n\0`), expect: "error", finish: false }),
    () => ({ kind: "", payload: Buffer.from(`CONNECT\naccept-version:1.2\nlogin:guest\npasscode:${word(5)}\n\n\0`), expect: "error", finish: false }),
    () => ({ kind: "", payload: Buffer.from(`CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\nheart-beat:${word(3)}\n\n\0`), expect: "error", finish: false }),
    () => after(`SUBSCRIBE\nid:a\ndestination:/queue/fuzz.x\n\n\0SUBSCRIBE\nid:a\ndestination:/queue/fuzz.x\n\n\0`),
    () => after(`SEND\ndestination:/queue/fuzz.x\nexpiration:${word(3)}\n\n\0`),
  ];
  const i = Math.floor(rand() * bad.length);
  return { ...bad[i]!(), kind: `invalid-${i}` };
}

interface Outcome {
  kind: string;
  sawError: boolean;
  errorHasMessage: boolean;
  closedByBroker: boolean;
}

function runCase(port: number, c: Case): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, noDelay: true });
    let received = "";
    let dribbleTimer: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => {
      s.destroy();
      reject(new Error(`${c.kind}: no ERROR and no close within ${caseDeadlineMs} ms; got ${JSON.stringify(received.slice(0, 200))}`));
    }, caseDeadlineMs);
    s.on("connect", () => {
      if (c.payload.length) s.write(c.payload);
      if (c.finish) s.end();
      if (c.dribble) {
        let i = 0;
        dribbleTimer = setInterval(() => {
          if (i < c.dribble!.length && !s.destroyed) s.write(c.dribble!.subarray(i, ++i));
        }, c.dribbleMs);
      }
    });
    s.on("data", (d: Buffer) => {
      if (received.length < 65536) received += d.toString("latin1");
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(deadline);
      clearInterval(dribbleTimer);
      const m = /(?:^|\0)\n*ERROR\n([\s\S]*?)\n\n/.exec(received);
      resolve({ kind: c.kind, sawError: !!m, errorHasMessage: !!m && /(^|\n)message:.+/.test(m[1]!), closedByBroker: true });
    });
  });
}

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

it(`survives ${totalCases} bad frames while serving a well-formed client (seed ${seed})`, { timeout: 120_000 }, async () => {
  broker = await startEmbeddedBroker({ extraArgs: ["--connect-timeout", "1000", "--max-body", String(maxBody)] });
  const b = broker;
  const rand = mulberry32(seed);
  const cases = Array.from({ length: totalCases }, () => generate(rand));

  // The well-formed pair: a responder echoing on /queue/fuzz.echo and a requester.
  const responder = await RawClient.login(b.port);
  await responder.withReceipt("SUBSCRIBE", { id: "echo", destination: "/queue/fuzz.echo" });
  const requester = await RawClient.login(b.port);
  await requester.withReceipt("SUBSCRIBE", { id: "replies", destination: "/queue/fuzz.replies" });
  let fuzzing = true;
  const responderLoop = (async () => {
    while (fuzzing) {
      const m = await responder.next(30_000);
      responder.frame("SEND", { destination: m.headers["reply-to"]!, "correlation-id": m.headers["correlation-id"]! }, m.body);
    }
  })();
  let roundTrips = 0;
  let slowest = 0;
  const requesterLoop = (async () => {
    while (fuzzing) {
      const id = String(roundTrips);
      const t0 = Date.now();
      requester.frame("SEND", { destination: "/queue/fuzz.echo", "reply-to": "/queue/fuzz.replies", "correlation-id": id }, `ping ${id}`);
      const reply = await requester.next(5000);
      assert.equal(reply.headers["correlation-id"], id);
      assert.equal(reply.body.toString(), `ping ${id}`);
      slowest = Math.max(slowest, Date.now() - t0);
      roundTrips++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();

  let maxRss = rss(b.pid);
  const sampler = setInterval(() => (maxRss = Math.max(maxRss, rss(b.pid))), 100);
  const outcomes: Outcome[] = [];
  let next = 0;
  const started = Date.now();
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < cases.length) {
          const c = cases[next++]!;
          outcomes.push(await runCase(b.port, c));
        }
      }),
    );
  } finally {
    clearInterval(sampler);
    fuzzing = false;
  }
  await requesterLoop;
  responder.frame("SEND", { destination: "/queue/fuzz.echo", "reply-to": "/queue/fuzz.nobody", "correlation-id": "last" }, "bye");
  await responderLoop;
  const seconds = (Date.now() - started) / 1000;

  const byKind = new Map<string, { n: number; errors: number }>();
  for (const o of outcomes) {
    const k = byKind.get(o.kind) ?? { n: 0, errors: 0 };
    k.n++;
    if (o.sawError) k.errors++;
    byKind.set(o.kind, k);
  }
  const errors = outcomes.filter((o) => o.sawError).length;
  console.log(
    `fuzz: ${outcomes.length} bad connections in ${seconds.toFixed(1)} s, ${errors} ERROR frames, all closed; ` +
      `${roundTrips} good round trips (slowest ${slowest} ms); max RSS ${(maxRss / 1048576).toFixed(0)} MiB`,
  );
  console.log([...byKind].map(([k, v]) => `${k}:${v.n}/${v.errors}`).join(" "));

  assert.equal(outcomes.length, totalCases);
  for (const o of outcomes) if (o.sawError) assert.ok(o.errorHasMessage, `${o.kind}: ERROR without a message header`);
  for (const [kind, v] of byKind) {
    if (kind.startsWith("invalid") || kind.startsWith("oversized") || kind === "slowloris-connect") assert.equal(v.errors, v.n, `${kind}: every one answered with ERROR`);
  }
  assert.ok(roundTrips >= 20, `the well-formed client was served throughout (${roundTrips} round trips)`);
  assert.ok(maxRss < rssBoundBytes, `broker RSS peaked at ${maxRss} bytes`);
  process.kill(b.pid, 0);
  const c = await RawClient.login(b.port);
  await c.withReceipt("SEND", { destination: "/queue/fuzz.after" }, "still alive");
  c.destroy();
  responder.destroy();
  requester.destroy();
});
