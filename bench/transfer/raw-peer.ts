/**
 * The floor for bench/transfer: a process that moves file bytes over a plain TCP socket, no
 * framing, no hashing. A connection starts with one JSON line `{"op":"put"|"get","path":...}`.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { createServer } from "node:net";
import { pipeline } from "node:stream/promises";

const server = createServer((socket) => {
  socket.setNoDelay(true);
  let head = Buffer.alloc(0);
  const onData = (d: Buffer) => {
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(10);
    if (nl < 0) return;
    socket.off("data", onData);
    socket.pause();
    const req = JSON.parse(head.subarray(0, nl).toString()) as { op: "put" | "get"; path: string };
    const rest = head.subarray(nl + 1);
    if (req.op === "put") {
      const out = createWriteStream(req.path, { highWaterMark: 4 * 1024 * 1024 });
      if (rest.length) out.write(rest);
      void pipeline(socket, out).then(() => undefined, () => undefined);
    } else {
      void pipeline(createReadStream(req.path, { highWaterMark: 4 * 1024 * 1024 }), socket).catch(() => socket.destroy());
    }
  };
  socket.on("data", onData);
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as { port: number }).port })));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
