/**
 * A TCP proxy in front of a broker that can go silent without closing anything: `freeze()` stops
 * forwarding on every open connection (bytes are swallowed, no FIN, no RST), which is what a
 * guest restored from a snapshot sees on its old socket. New connections after a freeze work.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface FreezableProxy {
  port: number;
  url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  freeze(): void;
  close(): Promise<void>;
}

export async function startFreezableProxy(targetHost: string, targetPort: number): Promise<FreezableProxy> {
  const live = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted++;
    const upstream = connect({ host: targetHost, port: targetPort, noDelay: true });
    const pair = { client, upstream, frozen: false };
    live.add(pair);
    client.on("data", (d) => !pair.frozen && upstream.write(d));
    upstream.on("data", (d) => !pair.frozen && client.write(d));
    const end = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", () => !pair.frozen && end());
    upstream.on("close", () => !pair.frozen && end());
    client.on("error", () => undefined);
    upstream.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("proxy has no port");
  return {
    port: address.port,
    url: `stomp://127.0.0.1:${address.port}`,
    get accepted() {
      return accepted;
    },
    freeze() {
      for (const pair of live) pair.frozen = true;
    },
    async close() {
      for (const pair of live) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
