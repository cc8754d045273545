/**
 * bench/vm/trace.ts: where a template clone's time to agent-ready goes, on the host's clock.
 * `node --import tsx bench/vm/trace.ts [runs]` (VMC_TRACE_HOME keeps the template between runs;
 * VMC_TEST_IMAGE_HOME picks the image cache as in test/vm).
 * A logging TCP proxy sits between the guest's forwarded broker connection and the broker, so the
 * TCP connect (slirp + socat), every STOMP frame each way and the HELLO are timed; the console
 * log is polled every 5 ms for the guest's own lines (an agent built with extra stderr lines shows
 * its steps there, timed by the host). VMC_TRACE_IMAGES=dir1,dir2 clones templates of those built
 * images (`$VMC_HOME/images/<id>`) in turn, `runs` times each: a same-run A/B of two images, whose
 * medians of create → HELLO close the output.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { loadavg } from "node:os";
import { QemuDriver } from "@vmc/server/hypervisors/qemu/driver";
import { buildTemplate } from "@vmc/server/hypervisors/qemu/template";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import { startEmbeddedBroker } from "../../test/harness/embedded-broker";
import { freePort } from "../../test/harness/ports";
import { removeHome, startController, tempHome, testImage } from "../../test/vm/harness";
import { imageFromDir, median } from "./images";

const runs = Number(process.argv[2] ?? 3);
const keep = process.env.VMC_TRACE_HOME;
const home = keep ?? tempHome("vmc-trace-vm-");
if (keep) mkdirSync(keep, { recursive: true });
const broker = await startEmbeddedBroker({ port: await freePort() });
const c = await startController(home, broker.url);
const driver = new QemuDriver(home);
const key = loadOrCreateControllerKeys(home).publicKey;

let t0 = 0;
let marks: string[] = [];
const mark = (what: string) => marks.push(`${(performance.now() - t0).toFixed(1).padStart(8)} ms  ${what}`);

// The logging proxy: guest (via slirp + socat) → proxy → broker.
const proxyPort = await freePort();
const frames = (dir: string, chunk: Buffer) => {
  for (const f of chunk.toString("latin1").split("\0")) {
    const cmd = f.replace(/^[\r\n]+/, "").split("\n")[0];
    if (cmd) mark(`${dir} ${cmd}${cmd === "SEND" || cmd === "MESSAGE" ? ` ${/destination:([^\n]*)/.exec(f)?.[1] ?? ""}` : ""}`);
  }
};
const proxy = createServer((guest: Socket) => {
  mark("proxy: TCP connection from socat");
  const up = connect(broker.port, "127.0.0.1");
  guest.on("data", (d) => frames("guest→", d));
  up.on("data", (d) => frames("←broker", d));
  guest.pipe(up).pipe(guest);
  guest.on("error", () => up.destroy());
  up.on("error", () => guest.destroy());
});
await new Promise<void>((r) => proxy.listen(proxyPort, "127.0.0.1", r));

try {
  const dirs = process.env.VMC_TRACE_IMAGES?.split(",").filter(Boolean) ?? [];
  const images = dirs.length ? dirs.map(imageFromDir) : [await testImage()];
  const results = new Map<string, number[]>(images.map((i) => [i.id, []]));
  for (const image of images) {
    const template = await buildTemplate(home, image, { memoryMiB: 512, cpus: 1 });
    console.error(`template ${template.dir} (boot ${template.bootMs} ms)`);
  }
  for (let i = 0; i < runs * images.length; i++) {
    const image = images[i % images.length]!;
    const name = `trace${Date.now().toString(36)}`;
    marks = [];
    const load = loadavg()[0]!;
    t0 = performance.now();
    await driver.create({ name, image, memoryMiB: 512, broker: { host: "127.0.0.1", port: proxyPort }, controllerPublicKey: key, fromTemplate: true });
    mark("created");
    const consoleFile = driver.files(name).console;
    let consoleSeen = 0;
    const readConsole = () => {
      try {
        const text = readFileSync(consoleFile, "latin1");
        for (const line of text.slice(consoleSeen).split("\n").filter(Boolean)) mark(`console: ${line.slice(0, 120)}`);
        consoleSeen = text.length;
      } catch {
        // not yet
      }
    };
    const poll = setInterval(readConsole, 5);
    await driver.start(name);
    mark("start() returned (running)");
    const hello = await c.waitHello(name, 60_000, Date.now() - 5 * 60_000);
    results.get(image.id)!.push(performance.now() - t0);
    mark(`HELLO at the controller (sentAt guest-clock skew ${Date.now() - hello.sentAt} ms)`);
    clearInterval(poll);
    readConsole();
    const acked = driver.store.read(name).driverData.identityAcked;
    console.log(`\nrun ${i + 1}, image ${image.id}, load ${load.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}, identityAcked ${String(acked)}`);
    for (const m of marks) console.log(m);
    await driver.delete(name, { force: true });
  }
  console.log("");
  for (const [id, xs] of results) console.log(`image ${id}: create → HELLO median ${median(xs).toFixed(0)} ms (${xs.map((x) => x.toFixed(0)).join(", ")})`);
} finally {
  proxy.close();
  await c.close().catch(() => undefined);
  await broker.stop();
  if (!keep) removeHome(home);
}
