/** Does a STOMP broker answer at host:port? (A CONNECT answered by CONNECTED or ERROR counts.) */
import { connect } from "node:net";

export function stompResponds(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, noDelay: true });
    let received = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on("error", () => done(false));
    socket.on("close", () => done(false));
    socket.on("connect", () => socket.write("CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\0"));
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
      if (received.includes("\0")) done(received.startsWith("CONNECTED") || received.startsWith("ERROR"));
    });
  });
}
