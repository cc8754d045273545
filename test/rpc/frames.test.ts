/**
 * The endpoints' framing parser on its own: messages split at every byte boundary come out
 * whole, garbage between them is dropped with a reason, and nothing above the cap is buffered.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { frameParser, type Framing } from "@vmc/server/rpc/frames";

function collect(framing: Framing, max = 1 << 20) {
  const messages: string[] = [];
  const drops: string[] = [];
  const parser = frameParser(framing, max, { message: (b) => messages.push(b.toString()), dropped: (r) => drops.push(r) });
  return { parser, messages, drops };
}

const bodies = ['{"jsonrpc":"2.0","id":1,"method":"vm.list"}', '{"jsonrpc":"2.0","id":"é","method":"x","params":{"s":"a\\nb"}}', "{}"];
const lsp = Buffer.from(bodies.map((b) => `Content-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`).join(""));
const nd = Buffer.from(bodies.map((b) => `${b}\r\n`).join(""));

describe("framing parser", () => {
  for (const [framing, stream] of [["lsp", lsp], ["ndjson", nd]] as const) {
    it(`${framing}: every split point gives the same messages`, () => {
      for (let cut = 0; cut <= stream.length; cut++) {
        const { parser, messages, drops } = collect(framing);
        parser.push(stream.subarray(0, cut));
        parser.push(stream.subarray(cut));
        assert.deepEqual(messages, bodies, `cut at ${cut}`);
        assert.deepEqual(drops, []);
      }
    });
  }

  it("lsp: garbage, a bad length and an oversized header are dropped with reasons; the next message is found", () => {
    const { parser, messages, drops } = collect("lsp", 100);
    parser.push(Buffer.from("hello there\r\nContent-Length: abc\r\n\r\nContent-Length: 5000\r\n\r\n"));
    parser.push(Buffer.from(`Content-Length: 2\r\nX-Other: 1\r\n\r\n{}`));
    assert.deepEqual(messages, ["{}"]);
    assert.equal(drops.length, 3, drops.join("\n"));
    assert.match(drops.join("\n"), /before a Content-Length header/);
    assert.match(drops.join("\n"), /not a number/);
    assert.match(drops.join("\n"), /over the limit/);
  });

  it("lsp: a declared length that swallowed the next message is rescued", () => {
    const { parser, messages } = collect("lsp");
    const next = `Content-Length: 2\r\n\r\n{}`;
    parser.push(Buffer.from(`Content-Length: ${5 + next.length}\r\n\r\n{"a":${next}`));
    assert.equal(messages.length, 1, "the broken body");
    parser.rescue!(Buffer.from(messages[0]!));
    assert.deepEqual(messages.slice(1), ["{}"]);
  });

  it("ndjson: a line over the cap is skipped to its end without being kept", () => {
    const { parser, messages, drops } = collect("ndjson", 64);
    parser.push(Buffer.alloc(1000, 0x61));
    parser.push(Buffer.alloc(1000, 0x61));
    parser.push(Buffer.from("aaa\n{}\n"));
    assert.deepEqual(messages, ["{}"]);
    assert.equal(drops.length, 1);
  });
});
