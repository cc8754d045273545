/**
 * @stomp/stompjs as VM Controller uses it: over TCP through @stomp/tcp-wrapper with a `noDelay`
 * socket, no automatic reconnect (tests decide when a connection goes away), client → broker
 * heart-beats off where the broker's quirks say so. `Inbox` turns a subscription's callback into
 * something a test can await with a deadline.
 */
import { createConnection, type Socket } from "node:net";
import { Client, Versions, type IFrame, type IMessage, type StompHeaders, type StompSubscription } from "@stomp/stompjs";
import { TCPWrapper } from "@stomp/tcp-wrapper";
import type { BrokerQuirks, RunningBroker } from "../harness/brokers";

let lastSocket: Socket | undefined;

class NoDelayTcp extends TCPWrapper {
  protected override getSocket(port: number, host: string): Socket {
    lastSocket = createConnection({ port, host, noDelay: true });
    return lastSocket;
  }
}

export interface StompJsSession {
  client: Client;
  /** The TCP socket under the client (destroy it to vanish without DISCONNECT). */
  socket: Socket;
  /** Negotiated STOMP version. */
  version: string;
  /** ERROR frames received after CONNECTED (message header and body). */
  errors: string[];
  /** Graceful DISCONNECT (waits for the broker to acknowledge it). */
  close(): Promise<void>;
  /** Drops the TCP connection without DISCONNECT, as a crashed consumer would. */
  vanish(): void;
}

export interface StompJsOptions {
  login?: string;
  passcode?: string;
  versions?: string[];
  heartbeatIncoming?: number;
  heartbeatOutgoing?: number;
  timeoutMs?: number;
}

/** Connects a stompjs client; rejects with the broker's ERROR message if refused. */
export function connectStompJs(broker: RunningBroker, quirks: BrokerQuirks, opts: StompJsOptions = {}): Promise<StompJsSession> {
  return new Promise((resolve, reject) => {
    let socket: Socket | undefined;
    const client = new Client({
      webSocketFactory: () => {
        const w = new NoDelayTcp(broker.host, broker.port);
        socket = lastSocket;
        return w;
      },
      connectHeaders: { login: opts.login ?? "guest", passcode: opts.passcode ?? "guest", host: "/" },
      stompVersions: new Versions(opts.versions ?? ["1.2", "1.1", "1.0"]),
      reconnectDelay: 0,
      heartbeatIncoming: opts.heartbeatIncoming ?? 0,
      heartbeatOutgoing: quirks.clientHeartbeatsUnreliable ? 0 : (opts.heartbeatOutgoing ?? 0),
      connectionTimeout: opts.timeoutMs ?? 10_000,
      debug: () => undefined,
    });
    const timer = setTimeout(() => {
      void client.deactivate({ force: true });
      reject(new Error(`stompjs: no CONNECTED from ${broker.url} within ${opts.timeoutMs ?? 10_000} ms`));
    }, opts.timeoutMs ?? 10_000);
    client.onConnect = (frame: IFrame) => {
      clearTimeout(timer);
      const s = socket!;
      const errors: string[] = [];
      client.onStompError = (f: IFrame) => void errors.push(`${f.headers.message ?? ""}: ${f.body}`);
      resolve({
        client,
        socket: s,
        version: frame.headers.version ?? "1.0",
        errors,
        close: () => client.deactivate(),
        vanish: () => {
          s.destroy();
          void client.deactivate({ force: true });
        },
      });
    };
    client.onStompError = (frame: IFrame) => {
      clearTimeout(timer);
      void client.deactivate({ force: true });
      reject(new Error(`stompjs: ERROR ${frame.headers.message ?? ""} ${frame.body}`));
    };
    client.onWebSocketClose = () => {
      clearTimeout(timer);
      reject(new Error("stompjs: connection closed before CONNECTED"));
    };
    client.activate();
  });
}

/** Messages of one subscription, awaitable in order. */
export class Inbox {
  readonly received: IMessage[] = [];
  private taken = 0;
  private waiters: Array<() => void> = [];
  subscription?: StompSubscription;

  readonly push = (m: IMessage): void => {
    this.received.push(m);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  };

  /** The next message not yet taken, waiting up to `timeoutMs`. */
  async next(timeoutMs = 5000, what = "a MESSAGE"): Promise<IMessage> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length <= this.taken) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${this.received.length} received)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received[this.taken++]!;
  }

  /** The next `n` messages. */
  async take(n: number, timeoutMs = 5000): Promise<IMessage[]> {
    const out: IMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < n; i++) out.push(await this.next(Math.max(1, deadline - Date.now()), `message ${i + 1} of ${n}`));
    return out;
  }

  get pending(): number {
    return this.received.length - this.taken;
  }
}

/**
 * Subscribes and waits for the broker's RECEIPT, so a test knows the subscription is active
 * before it publishes.
 */
export async function subscribe(s: StompJsSession, destination: string, headers: StompHeaders = {}, timeoutMs = 5000): Promise<Inbox> {
  const inbox = new Inbox();
  const receipt = `sub-${Math.random().toString(36).slice(2)}`;
  const confirmed = receiptFor(s, receipt, timeoutMs);
  inbox.subscription = s.client.subscribe(destination, inbox.push, { ...headers, receipt });
  await confirmed;
  return inbox;
}

/** Resolves when the RECEIPT with `receipt` arrives. Register before sending the frame. */
export function receiptFor(s: StompJsSession, receipt: string, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no RECEIPT ${receipt} within ${timeoutMs} ms; ERRORs: ${s.errors.join(" | ") || "none"}`)), timeoutMs);
    s.client.watchForReceipt(receipt, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Publishes and waits for the broker's RECEIPT (a publisher confirm). */
export async function publishConfirmed(
  s: StompJsSession,
  destination: string,
  body: string | Uint8Array,
  headers: StompHeaders = {},
  timeoutMs = 5000,
): Promise<void> {
  const receipt = `pub-${Math.random().toString(36).slice(2)}`;
  const confirmed = receiptFor(s, receipt, timeoutMs);
  if (typeof body === "string") s.client.publish({ destination, body, headers: { ...headers, receipt } });
  else s.client.publish({ destination, binaryBody: body, headers: { ...headers, receipt } });
  await confirmed;
}
