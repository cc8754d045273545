/**
 * Runs the agent's start path once, up to a published HELLO, then stops it. Two callers:
 * - the guest image's V8 startup snapshot build (main.ts): the functions it runs keep their
 *   bytecode in the snapshot, so a booting guest does not parse and compile them again;
 * - a template boot, before the agent waits for its identity (so before the template is saved): a
 *   clone restored from the template also finds the inline caches warm in the saved heap. Under TCG
 *   every V8 runtime path first taken after the restore costs a fresh translation, which made the
 *   clone's start several times slower than this one.
 *
 * The broker for this run is a loopback responder that speaks just enough STOMP for the client:
 * CONNECTED for CONNECT, a RECEIPT for every frame that asks, and it notes the first SEND to
 * presence. Nothing leaves the machine; the identity and key are throw-away.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Destinations } from "@vmc/protocol/bus";
import { generateControllerKeyPair } from "@vmc/protocol/signing";
import { startAgent } from "./agent";
import { defaultPlugins } from "./plugins";
import { resolveSettings } from "./settings";

/** How long the warm-up may take before it gives up waiting for the HELLO (the clone then just starts colder). */
const WARM_UP_MS = 10_000;

/** Resolves true once the HELLO went out, false when the run failed or timed out (it says why on stderr). */
export async function warmUp(argv: string[]): Promise<boolean> {
  let stateDir: string | undefined;
  let responder: { server: Server; hello: Promise<void> } | undefined;
  try {
    stateDir = mkdtempSync(join(tmpdir(), "vmc-warm-up-"));
    responder = await loopbackStomp();
    const port = (responder.server.address() as AddressInfo).port;
    const settings = resolveSettings([...argv, "--id", "vmc.warm-up", "--broker", `stomp://127.0.0.1:${port}`, "--key", generateControllerKeyPair().publicKey, "--state-dir", stateDir]);
    const agent = await startAgent({
      id: settings.id,
      brokerUrl: settings.brokerUrl,
      labels: settings.labels,
      controllerKey: settings.key!,
      stateDir: settings.stateDir,
      plugins: defaultPlugins({ inVm: true, dataListen: settings.dataListen, noTransfer: settings.noTransfer }),
      log: () => undefined,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const helloSent = await Promise.race([responder.hello.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), WARM_UP_MS)))]);
    clearTimeout(timer);
    await agent.stop("warm-up");
    if (!helloSent) console.error(`vmc agent: warm-up: no HELLO within ${WARM_UP_MS} ms (the agent starts colder)`);
    return helloSent;
  } catch (e) {
    console.error(`vmc agent: warm-up failed (the agent starts colder): ${e instanceof Error ? e.message : String(e)}`);
    return false;
  } finally {
    responder?.server.close();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }
}

/** A STOMP peer on 127.0.0.1 for the warm-up: answers CONNECT and receipts; `hello` resolves at the first SEND to presence. */
async function loopbackStomp(): Promise<{ server: Server; hello: Promise<void> }> {
  let sawHello!: () => void;
  const hello = new Promise<void>((resolve) => (sawHello = resolve));
  const server = createServer((socket) => {
    let pending = "";
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk) => {
      pending += chunk.toString("latin1");
      let end: number;
      while ((end = pending.indexOf("\0")) >= 0) {
        const frame = pending.slice(0, end).replace(/^[\r\n]+/, "");
        pending = pending.slice(end + 1);
        const head = frame.slice(0, frame.indexOf("\n\n") >= 0 ? frame.indexOf("\n\n") : frame.length).split("\n");
        const command = head[0]?.trim();
        const header = (name: string) => head.find((l) => l.startsWith(`${name}:`))?.slice(name.length + 1).trim();
        if (command === "CONNECT" || command === "STOMP") socket.write("CONNECTED\nversion:1.2\nheart-beat:0,0\nsession:warm-up\n\n\0");
        if (command === "SEND" && header("destination") === Destinations.presence) sawHello();
        const receipt = header("receipt");
        if (receipt !== undefined) socket.write(`RECEIPT\nreceipt-id:${receipt}\n\n\0`);
        if (command === "DISCONNECT") socket.end();
      }
    });
  });
  server.unref();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return { server, hello };
}
