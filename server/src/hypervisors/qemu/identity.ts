/**
 * The identity port: a virtio-serial port (`vmc.identity`) between the driver and the guest agent,
 * backed on the host by a unix socket. It hands a template-restored guest its own identity (its
 * kernel command line is the template's) and tells the agent when an in-place restore has made
 * its broker connection stale. One JSON object per line each way:
 * - guest → host: `{"type":"WAITING"}` (template agent waits for an identity), `{"type":"ACK"}`;
 * - host → guest: `{"type":"IDENTITY","agentId","broker","controllerKey","hostTimeMs"}`,
 *   `{"type":"RESTORED","hostTimeMs"}`.
 */
import { connect, type Socket } from "node:net";
import { GUEST_BROKER_ADDRESS } from "./command";

export interface IdentityMessage {
  type: "IDENTITY";
  agentId: string;
  broker: string;
  controllerKey: string;
  hostTimeMs: number;
}

export interface RestoredMessage {
  type: "RESTORED";
  hostTimeMs: number;
}

export function identityMessage(agentId: string, controllerKey: string): IdentityMessage {
  return { type: "IDENTITY", agentId, broker: `stomp://${GUEST_BROKER_ADDRESS}`, controllerKey, hostTimeMs: Date.now() };
}

/** An open connection to a VM's identity port. */
export class IdentityPort {
  private buffer = "";
  private readonly waiters: { type: string; resolve: () => void }[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer = (this.buffer + chunk).slice(-65536);
      let nl: number;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        let type: unknown;
        try {
          type = (JSON.parse(line) as { type?: unknown }).type;
        } catch {
          continue;
        }
        for (const w of this.waiters.filter((x) => x.type === type)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    });
    socket.on("error", () => undefined);
  }

  static open(path: string, timeoutMs = 5000): Promise<IdentityPort> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`identity port ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new IdentityPort(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Resolves true when the guest sends a line of `type` within `timeoutMs`, else false. */
  waitFor(type: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      const waiter = {
        type,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      this.waiters.push(waiter);
      this.socket.once("close", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
  }

  send(message: IdentityMessage | RestoredMessage): void {
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}

/** Sends one message and waits (bounded) for the agent's ACK; true when acknowledged. */
export async function tellGuest(path: string, message: IdentityMessage | RestoredMessage, ackTimeoutMs = 5000): Promise<boolean> {
  const port = await IdentityPort.open(path);
  try {
    const ack = port.waitFor("ACK", ackTimeoutMs);
    port.send(message);
    return await ack;
  } finally {
    port.close();
  }
}
