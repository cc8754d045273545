/**
 * The TCP transport under @stomp/stompjs: @stomp/tcp-wrapper with a socket opened with
 * `noDelay: true` (without it every request/reply waits ~40 ms for Nagle + delayed ACK), and a
 * handle on the raw socket so the bus client can watch incoming activity, measure pending writes
 * and tear a silently dead socket down at once.
 */
import { createConnection, type Socket } from "node:net";
import { TCPWrapper } from "@stomp/tcp-wrapper";

let socketCreated: ((socket: Socket) => void) | undefined;
/** Each wrapper's socket (TCPWrapper keeps its own private; getSocket runs before subclass fields exist). */
const sockets = new WeakMap<TCPWrapper, Socket>();

class NoDelayTcpWrapper extends TCPWrapper {
  private corked = false;

  protected override getSocket(port: number, host: string): Socket {
    const socket = createConnection({ port, host, noDelay: true });
    sockets.set(this, socket);
    socketCreated?.(socket);
    return socket;
  }

  /**
   * Frames sent in one tick leave in one write: a fan-out sends a thousand commands (and a host of
   * many agents a thousand results and ACKs) in a burst, and a system call per frame was the cost.
   */
  override send(data: string | ArrayBuffer): void {
    const socket = sockets.get(this);
    if (socket && !this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    super.send(data);
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
