/** Does a STOMP broker answer at host:port? One real CONNECT, then the socket is closed. */
import { connect } from "node:net";

/** `connected`: CONNECTED; `refused`: an ERROR (a broker is there but said no); `silent`: nothing. */
export type StompProbeResult = "connected" | "refused" | "silent";

export function stompProbe(host: string, port: number, timeoutMs = 1000, credentials?: { login: string; passcode: string }): Promise<StompProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, noDelay: true });
    let received = "";
    const done = (result: StompProbeResult) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done("silent"), timeoutMs);
    socket.on("error", () => done("silent"));
    socket.on("close", () => done("silent"));
    const login = credentials ? `login:${credentials.login}\npasscode:${credentials.passcode}\n` : "";
    socket.on("connect", () => socket.write(`CONNECT\naccept-version:1.2\nhost:/\n${login}heart-beat:0,0\n\n\0`));
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
      if (received.includes("\0")) done(received.startsWith("CONNECTED") ? "connected" : received.startsWith("ERROR") ? "refused" : "silent");
    });
  });
}

/** True when any broker answers (CONNECTED or ERROR): the address is taken by a STOMP broker. */
export async function stompResponds(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return (await stompProbe(host, port, timeoutMs)) !== "silent";
}
