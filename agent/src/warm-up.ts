/**
 * Template boot only, before the agent waits for its identity (so before the template is saved):
 * run the agent's start path once, up to a published HELLO, then stop it. A clone restored from
 * the template finds that code compiled and its inline caches warm in the saved heap; under TCG
 * every V8 runtime path first taken after the restore costs a fresh translation, which made the
 * clone's start several times slower than this one.
 *
 * The broker for this run is a loopback responder that speaks just enough STOMP for the client:
 * CONNECTED for CONNECT, a RECEIPT for every frame that asks, and it notes the first SEND to
 * presence. Nothing leaves the guest; the identity and key are throw-away.
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

export async function warmUp(argv: string[]): Promise<void> {
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
    await Promise.race([responder.hello, new Promise<void>((resolve) => (timer = setTimeout(resolve, WARM_UP_MS)))]);
    clearTimeout(timer);
    await agent.stop("warm-up");
  } catch (e) {
    console.error(`vmc agent: warm-up before the template is saved failed (clones start slower): ${e instanceof Error ? e.message : String(e)}`);
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
