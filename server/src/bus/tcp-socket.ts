/**
 * The TCP transport under @stomp/stompjs: @stomp/tcp-wrapper with a socket opened with
 * `noDelay: true` (without it every request/reply waits ~40 ms for Nagle + delayed ACK), and a
 * handle on the raw socket so the bus client can watch incoming activity, measure pending writes
 * and tear a silently dead socket down at once.
 */
import { createConnection, type Socket } from "node:net";
import { TCPWrapper } from "@stomp/tcp-wrapper";

let socketCreated: ((socket: Socket) => void) | undefined;

class NoDelayTcpWrapper extends TCPWrapper {
  protected override getSocket(port: number, host: string): Socket {
    const socket = createConnection({ port, host, noDelay: true });
    socketCreated?.(socket);
    return socket;
  }
}

export interface TcpStompSocket {
  /** What stompjs drives. */
  wrapper: TCPWrapper;
  /** The socket under it. */
  socket: Socket;
}

/** Opens a TCP connection for one STOMP session. */
export function openTcpStompSocket(host: string, port: number): TcpStompSocket {
  let socket: Socket | undefined;
  // getSocket runs inside TCPWrapper's constructor, before a subclass could store anything.
  socketCreated = (s) => (socket = s);
  try {
    const wrapper = new NoDelayTcpWrapper(host, port);
    if (!socket) throw new Error("tcp-wrapper did not create its socket through getSocket");
    return { wrapper, socket };
  } finally {
    socketCreated = undefined;
  }
}
