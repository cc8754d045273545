import assert from "node:assert/strict";
import { it } from "node:test";
import { BODY_REF_HEADER, LargeBodyFilter } from "@vmc/server/bus/large-bodies";

const big = Buffer.from(Array.from({ length: 100 }, (_, i) => (i === 10 ? 0 : 65 + (i % 26))));
const stream = Buffer.concat([
  Buffer.from("\n"),
  Buffer.from("MESSAGE\r\ndestination:/topic/a\r\ncontent-length:5\r\n\r\nhello\0"),
  Buffer.from("\r\n\n"),
  Buffer.from(`MESSAGE\ndestination:/topic/b\ncontent-length:100\n${BODY_REF_HEADER}:forged\nsubscription:s-1\n\n`),
  big,
  Buffer.from("\0RECEIPT\nreceipt-id:7\n\n\0ERROR\nmessage:x\n\nno length\0"),
]);

it("replaces large MESSAGE bodies by refs and passes everything else through, whatever the chunking", () => {
  for (const size of [1, 2, 3, 5, 64, stream.length]) {
    const bodies = new Map<string, Buffer>();
    const filter = new LargeBodyFilter(64, bodies);
    const out: Buffer[] = [];
    for (let i = 0; i < stream.length; i += size) out.push(filter.transform(stream.subarray(i, i + size)));
    const text = Buffer.concat(out).toString("latin1");
    assert.equal(bodies.size, 1, `chunks of ${size}`);
    const [ref, body] = [...bodies][0] as [string, Buffer];
    assert.ok(body.equals(big), `chunks of ${size}: body differs`);
    assert.notEqual(ref, "forged");
    assert.equal(
      text,
      "\nMESSAGE\r\ndestination:/topic/a\r\ncontent-length:5\r\n\r\nhello\0\r\n\n" +
        `MESSAGE\ndestination:/topic/b\nsubscription:s-1\n${BODY_REF_HEADER}:${ref}\ncontent-length:0\n\n\0` +
        "RECEIPT\nreceipt-id:7\n\n\0ERROR\nmessage:x\n\nno length\0",
      `chunks of ${size}`,
    );
  }
});
