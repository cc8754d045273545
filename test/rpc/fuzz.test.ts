/**
 * Bad input: 10,000 malformed messages to each endpoint (`vmc rpc` in both framings and
 * `vmc serve --stdio`, real processes) — broken framing, bad JSON, wrong types, oversized
 * payloads, unknown methods and notifications — each followed by a well-formed request. Every
 * malformed message gets its proper error or is dropped with a logged reason, every well-formed
 * request is answered, the process stays up with bounded memory; then requests after `shutdown`
 * are refused with ShuttingDown and `exit` ends the process cleanly.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RpcErrorCodes, VmcErrorCodes } from "@vmc/protocol/errors";
import { startEmbeddedBroker, type EmbeddedBroker } from "../harness/embedded-broker";
import { ENDPOINTS, startEndpoint, tempDir, type RpcProcess, type RpcResponse } from "./harness";

const MALFORMED = 10_000;
const MAX_MESSAGE = 1024 * 1024;

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What a malformed message must produce. */
type Expect = { kind: "error"; id: number; code: number } | { kind: "nullError"; code: number } | { kind: "dropped" };

interface Case {
  bytes: Buffer;
  expect: Expect;
  name: string;
}

function lspFrame(body: Buffer | string): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return Buffer.concat([Buffer.from(`Content-Length: ${b.length}\r\n\r\n`), b]);
}

/** `common` cases are drawn uniformly; `rare` ones (megabyte payloads) once in 200 draws, to keep the run short. */
function makeCases(framing: "lsp" | "ndjson", random: () => number, ids: () => number): { common: Array<() => Case>; rare: Array<() => Case> } {
  const frame = (body: Buffer | string) => (framing === "lsp" ? lspFrame(body) : Buffer.concat([Buffer.from(body), Buffer.from("\n")]));
  const junk = (n: number) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = 0x21 + Math.floor(random() * 90); // printable, never a newline
    return b.toString("latin1").replace(/Content-Length/gi, "x");
  };
  const rare: Array<() => Case> = [
    () => {
      const body = Buffer.alloc(MAX_MESSAGE + 1 + Math.floor(random() * 1024), 0x61);
      return { name: "oversized message", bytes: framing === "lsp" ? lspFrame(body) : Buffer.concat([body, Buffer.from("\n")]), expect: { kind: "dropped" } };
    },
    () => {
      const id = ids();
      const padding = "x".repeat(200_000 + Math.floor(random() * 300_000));
      return { name: "large params", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: "vm.list", params: { padding } })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidParams } };
    },
  ];
  const cases: Array<() => Case> = [
    () => ({ name: "bad JSON", bytes: frame(`{"jsonrpc":"2.0","id":${ids()},"method":"vm.list"`), expect: { kind: "nullError", code: RpcErrorCodes.ParseError } }),
    () => ({ name: "random text", bytes: frame(`@${junk(1 + Math.floor(random() * 200))}`), expect: { kind: "nullError", code: RpcErrorCodes.ParseError } }),
    () => ({ name: "not an object", bytes: frame(JSON.stringify([1, "two", { three: 3 }])), expect: { kind: "nullError", code: RpcErrorCodes.InvalidRequest } }),
    () => ({ name: "a string", bytes: frame(JSON.stringify("vm.list")), expect: { kind: "nullError", code: RpcErrorCodes.InvalidRequest } }),
    () => ({ name: "null", bytes: frame("null"), expect: { kind: "nullError", code: RpcErrorCodes.InvalidRequest } }),
    () => {
      const id = ids();
      return { name: "jsonrpc 1.0", bytes: frame(JSON.stringify({ jsonrpc: "1.0", id, method: "vm.list" })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidRequest } };
    },
    () => ({ name: "object id", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id: { x: 1 }, method: "vm.list" })), expect: { kind: "nullError", code: RpcErrorCodes.InvalidRequest } }),
    () => {
      const id = ids();
      return { name: "numeric method", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: 42 })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidRequest } };
    },
    () => {
      const id = ids();
      return { name: "string params", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: "vm.start", params: "vm1" })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidRequest } };
    },
    () => {
      const id = ids();
      const params = [{ name: 5 }, { name: "a b" }, {}, { name: "x", waitForAgent: "yes" }, [1, 2], { name: "x".repeat(100) }][Math.floor(random() * 6)];
      return { name: "wrong param types", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: "vm.start", params })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidParams } };
    },
    () => {
      const id = ids();
      const params = { target: "", argv: "ls", timeoutMs: -1 };
      return { name: "cmd.run wrong types", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: "cmd.run", params })), expect: { kind: "error", id, code: RpcErrorCodes.InvalidParams } };
    },
    () => {
      const id = ids();
      return { name: "unknown method", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id, method: `no.such.${junk(8)}`, params: {} })), expect: { kind: "error", id, code: RpcErrorCodes.MethodNotFound } };
    },
    () => ({ name: "unknown notification", bytes: frame(JSON.stringify({ jsonrpc: "2.0", method: `no.such.${junk(8)}`, params: {} })), expect: { kind: "dropped" } }),
    () => ({ name: "notification with bad params", bytes: frame(JSON.stringify({ jsonrpc: "2.0", method: "vm.stateChanged", params: 7 })), expect: { kind: "dropped" } }),
    () => ({ name: "response to nothing", bytes: frame(JSON.stringify({ jsonrpc: "2.0", id: 99_999_999, result: {} })), expect: { kind: "dropped" } }),
  ];
  if (framing === "lsp") {
    cases.push(
      () => ({ name: "garbage without header", bytes: Buffer.from(junk(1 + Math.floor(random() * 300))), expect: { kind: "dropped" } }),
      () => ({ name: "misspelt header", bytes: Buffer.from(`Content-Lenght: 10\r\n\r\n{"a":1234}`), expect: { kind: "dropped" } }),
      () => ({ name: "non-numeric length", bytes: Buffer.from(`Content-Length: ten\r\n\r\n{"a":1234}`), expect: { kind: "dropped" } }),
      () => ({ name: "header without end", bytes: Buffer.from(`Content-Length: 12\r\n{"jsonrpc":"2.0"}`), expect: { kind: "dropped" } }),
      () => ({ name: "huge declared length", bytes: Buffer.from(`Content-Length: 99999999999999\r\n\r\n`), expect: { kind: "dropped" } }),
      () => {
        const body = JSON.stringify({ jsonrpc: "2.0", id: ids(), method: "vm.list" });
        return { name: "length too short", bytes: Buffer.concat([Buffer.from(`Content-Length: ${body.length - 5}\r\n\r\n`), Buffer.from(body)]), expect: { kind: "nullError", code: RpcErrorCodes.ParseError } };
      },
      () => {
        const body = JSON.stringify({ jsonrpc: "2.0", id: ids(), method: "vm.list" });
        return { name: "length too long", bytes: Buffer.concat([Buffer.from(`Content-Length: ${body.length + 9}\r\n\r\n${body}`), Buffer.from("#########")]), expect: { kind: "nullError", code: RpcErrorCodes.ParseError } };
      },
    );
  } else {
    cases.push(() => ({ name: "binary line", bytes: Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x7b, 0x0a]), expect: { kind: "nullError", code: RpcErrorCodes.ParseError } }));
  }
  return { common: cases, rare };
}

describe("malformed input never stops an endpoint", () => {
  let broker: EmbeddedBroker;
  const cleanup: Array<() => Promise<void> | void> = [];
  before(async () => {
    broker = await startEmbeddedBroker();
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c();
    await broker?.stop();
  });

  for (const kind of ENDPOINTS) {
    it(`${kind}: ${MALFORMED} malformed messages, each answered or logged; well-formed ones answered; shutdown refuses; exit ends`, async () => {
      const home = tempDir(`vmc-fuzz-${kind}-`);
      cleanup.push(home.remove);
      const rpc: RpcProcess = await startEndpoint(kind, { home: home.path, broker: broker.url, extraArgs: ["--max-message-bytes", String(MAX_MESSAGE)] });
      cleanup.push(() => rpc.kill());
      const random = prng(0x5eed + kind.length);
      let nextId = 1_000_000;
      const cases = makeCases(rpc.framing, random, () => nextId++);
      const expectedById = new Map<number, { code: number; name: string }>();
      const byIdResponses: Array<Promise<RpcResponse>> = [];
      const probes: Array<Promise<RpcResponse>> = [];
      const nullExpected = new Map<number, number>();
      let dropped = 0;
      const counts = new Map<string, number>();
      let peakRss = 0;
      const rss0 = rpc.rssKiB();
      const stderrBefore = rpc.stderrLines;

      for (let i = 0; i < MALFORMED; i++) {
        const pool = random() < 0.005 ? cases.rare : cases.common;
        const c = pool[Math.floor(random() * pool.length)]!();
        counts.set(c.name, (counts.get(c.name) ?? 0) + 1);
        if (c.expect.kind === "error") {
          expectedById.set(c.expect.id, { code: c.expect.code, name: c.name });
          byIdResponses.push(rpc.response(c.expect.id, 120_000, c.name));
        } else if (c.expect.kind === "nullError") nullExpected.set(c.expect.code, (nullExpected.get(c.expect.code) ?? 0) + 1);
        else dropped++;
        await rpc.writeRaw(c.bytes);
        // a well-formed request after every malformed message
        const probeId = nextId++;
        probes.push(rpc.response(probeId, 120_000, "probe"));
        await rpc.writeRaw(rpc.frame({ jsonrpc: "2.0", id: probeId, method: i % 2 ? "vm.list" : "vmc.handshake" }));
        if (i % 100 === 99) {
          // keep at most ~100 probes in flight, and watch memory
          await probes[probes.length - 1];
          peakRss = Math.max(peakRss, rpc.rssKiB());
          assert.equal(rpc.child.exitCode, null, `the endpoint died after ${i + 1} messages:\n${rpc.stderr.slice(-2000)}`);
        }
      }
      const answered = await Promise.all(probes);
      for (const r of answered) assert.equal(r.error, undefined, `a well-formed request failed: ${JSON.stringify(r.error)}`);
      const errors = await Promise.all(byIdResponses);
      for (const r of errors) {
        const want = expectedById.get(r.id as number)!;
        assert.equal(r.error?.code, want.code, `${want.name} (id ${String(r.id)}): ${JSON.stringify(r)}`);
      }
      const nullCodes = new Map<number, number>();
      for (const r of rpc.nullIdResponses) nullCodes.set(r.error!.code, (nullCodes.get(r.error!.code) ?? 0) + 1);
      assert.deepEqual(nullCodes, nullExpected, "one id-less error per message without a usable id");
      // every dropped message left a reason in the log (each sits between two well-formed requests)
      const reasons = rpc.stderr.split("\n").filter((l) => /dropped|invalid message|not answered/.test(l)).length;
      assert.ok(rpc.stderrLines - stderrBefore >= dropped, `${dropped} dropped messages but only ${rpc.stderrLines - stderrBefore} log lines`);
      assert.ok(reasons > 0, "drop reasons are logged");
      assert.ok(peakRss < rss0 + 200 * 1024, `RSS grew from ${rss0} KiB to ${peakRss} KiB`);
      for (const make of [...cases.common, ...cases.rare]) {
        const name = make().name;
        assert.ok((counts.get(name) ?? 0) > 0, `case '${name}' was never sent`);
      }

      // after shutdown: refused with ShuttingDown, never dropped silently; exit ends the process
      const shut = await rpc.call("shutdown", undefined, 30_000);
      assert.equal(shut.error, undefined);
      const refused = await Promise.all(Array.from({ length: 200 }, (_, i) => rpc.call(i % 2 ? "vm.list" : "no.such.method", {}, 30_000)));
      for (const r of refused) assert.equal(r.error?.code, VmcErrorCodes.ShuttingDown, JSON.stringify(r));
      await rpc.notify("exit");
      const exit = await rpc.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, rpc.stderr.slice(-2000));
    });
  }
});
