/**
 * The bus client every part of VM Controller uses to talk STOMP 1.2: the controller, the fleet,
 * the guest agent, transfers, tests and benchmarks.
 *
 * It wraps @stomp/stompjs over plain TCP and adds what the rest of the system relies on:
 * - reconnection with exponential backoff (first retry immediate), re-subscription of every
 *   live subscription after each reconnect, and state events (`connected`, `disconnected`,
 *   `reconnecting`, `closed`);
 * - dead-connection detection that does not trust the wall clock: the broker is asked for
 *   heartbeats and silence is measured on the monotonic clock, so a socket that died without an
 *   error (a VM restored from a snapshot, a dropped NAT entry) is torn down within ~2 heartbeat
 *   periods; optionally a jump of the wall clock against the monotonic clock forces a reconnect
 *   at once (a restored guest);
 * - `publish` that waits for a connection, and resolves on the broker's RECEIPT when asked
 *   (publisher confirm); JSON helpers that validate every incoming body with a zod schema and
 *   log-and-drop invalid ones (a bad message never throws into stompjs);
 * - write backpressure: {@link BusClient.bufferedBytes} and {@link BusClient.drained} let a
 *   producer (streamed command output, file chunks) stop reading its source while the socket's
 *   write buffer is full.
 *
 * RabbitMQ caveat: its STOMP adapter mishandles client → broker heartbeats under load, so
 * outgoing heartbeats default to 0; incoming heartbeats (broker → client) stay on.
 *
 * @packageDocumentation
 */
import { performance } from "node:perf_hooks";
import { Client, type IFrame, type IMessage, type IPublishParams, type IStompSocketMessageEvent, type StompHeaders } from "@stomp/stompjs";
import type { z } from "zod";
import { brokerUrl as defaultBrokerUrl, parseBrokerUrl, type BrokerAddress } from "../config";
import { BODY_REF_HEADER, LargeBodyFilter } from "./large-bodies";
import { openTcpStompSocket, type TcpStompSocket } from "./tcp-socket";

/** Connection state. `disconnected`: the link just dropped; `reconnecting`: a new attempt is under way. */
export type BusState = "idle" | "connecting" | "connected" | "disconnected" | "reconnecting" | "closed";

export type BusLogLevel = "debug" | "info" | "warn" | "error";
export type BusLogger = (level: BusLogLevel, message: string) => void;

export interface BusClientOptions {
  /** `stomp://[user:pass@]host:port`; default: `$VMC_BROKER`, else `stomp://127.0.0.1:61613`. */
  brokerUrl?: string;
  /** Name used in log lines (`bus[name]`). */
  name?: string;
  /** STOMP `host` header (RabbitMQ's virtual host). Omitted by default. */
  vhost?: string;
  /**
   * Broker → client heartbeat period asked for, ms (default 10000; 0 disables). The link is
   * declared dead after `heartbeatIncomingMs × heartbeatTolerance` of silence, measured on the
   * monotonic clock. Only active when the broker agrees to send heartbeats.
   */
  heartbeatIncomingMs?: number;
  /** Silence tolerated, in heartbeat periods (default 2). */
  heartbeatTolerance?: number;
  /** Client → broker heartbeat period, ms (default 0: RabbitMQ's STOMP adapter breaks under load with them). */
  heartbeatOutgoingMs?: number;
  /** First backoff delay after the immediate retry, ms (default 250). */
  reconnectInitialDelayMs?: number;
  /** Backoff ceiling, ms (default 5000). */
  reconnectMaxDelayMs?: number;
  /** A TCP connect + STOMP CONNECTED taking longer than this is abandoned and retried (default 5000). */
  connectTimeoutMs?: number;
  /**
   * Reconnect at once when the wall clock jumps against the monotonic clock by more than this
   * many ms (a guest restored from a snapshot, or a suspended host). Default 0: off.
   */
  clockJumpMs?: number;
  /** How long `publish` waits for a connection before rejecting, ms (default 30000). */
  publishTimeoutMs?: number;
  /** Default: warnings and errors to stderr. */
  log?: BusLogger;
}

/** STOMP acknowledgement mode of a subscription. */
export type AckMode = "auto" | "client" | "client-individual";

export interface SubscribeOptions {
  /** Default `auto`. With the client modes, call `message.ack()` / `message.nack()`. */
  ack?: AckMode;
  /** Unacknowledged messages the broker may push at once (RabbitMQ `prefetch-count`). */
  prefetch?: number;
  /** RabbitMQ queue declaration: `durable` header. */
  durable?: boolean;
  /** RabbitMQ queue declaration: `auto-delete` header. */
  autoDelete?: boolean;
  /** Queue expiry when unused, ms (`x-expires`). */
  expiresMs?: number;
  /** Any further SUBSCRIBE headers. An `id` here becomes the subscription id (default `s-<n>`). */
  headers?: Record<string, string>;
}

export interface PublishOptions {
  headers?: Record<string, string>;
  /** Resolve only once the broker confirms it has the message (STOMP RECEIPT). */
  receipt?: boolean;
  /** Bound on waiting for a connection and for the receipt, ms (default: the client's `publishTimeoutMs`). */
  timeoutMs?: number;
}

/** A message as handed to a subscription handler. */
export interface BusMessage {
  destination: string;
  headers: Readonly<Record<string, string>>;
  /** Body decoded as UTF-8. */
  readonly body: string;
  readonly binaryBody: Uint8Array;
  /** Acknowledge (client ack modes). Only the first ack or nack of a message counts; a no-op when the connection it came on is gone (the broker redelivers). */
  ack(): void;
  /** Negative acknowledgement (client ack modes); same caveat as `ack`. */
  nack(): void;
}

export type BusHandler = (message: BusMessage) => void | Promise<void>;
export type BusJsonHandler<T> = (value: T, message: BusMessage) => void | Promise<void>;

export interface BusSubscription {
  readonly destination: string;
  /** Resolves once the broker confirmed the first SUBSCRIBE (RECEIPT). */
  readonly ready: Promise<void>;
  unsubscribe(): void;
}

export class BusClosedError extends Error {
  constructor(message = "bus client closed") {
    super(message);
    this.name = "BusClosedError";
  }
}

interface SubscriptionRecord {
  id: string;
  destination: string;
  headers: StompHeaders;
  handler: BusHandler;
  confirmed: boolean;
  confirm: () => void;
}

interface PendingReceipt {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

type StateListener = (state: BusState, reason?: string) => void;

const DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024;
/** Incoming MESSAGE bodies from this size on bypass stompjs' byte-by-byte parser (see large-bodies.ts). */
const LARGE_BODY_BYTES = 32 * 1024;

function stderrLogger(name: string): BusLogger {
  return (level, message) => {
    if (level === "warn" || level === "error") process.stderr.write(`bus[${name}] ${level}: ${message}\n`);
  };
}

/** One STOMP connection that survives broker restarts and dead links. */
export class BusClient {
  readonly brokerUrl: string;
  readonly address: BrokerAddress;
  private readonly name: string;
  private readonly log: BusLogger;
  private readonly stomp: Client;
  private readonly incomingMs: number;
  private readonly tolerance: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly connectTimeoutMs: number;
  private readonly clockJumpMs: number;
  private readonly publishTimeoutMs: number;

  private currentState: BusState = "idle";
  private transport: TcpStompSocket | undefined;
  private generation = 0;
  private attempts = 0;
  private lastActivity = performance.now();
  private silenceLimitMs = 0;
  private wakeBackoff: (() => void) | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private clockOffset = Date.now() - performance.now();
  private nextId = 0;
  private readonly subscriptions = new Map<string, SubscriptionRecord>();
  private readonly receipts = new Map<string, PendingReceipt>();
  private readonly stateListeners = new Set<StateListener>();
  private connectWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private drainWaiters: Array<() => void> = [];
  private readonly largeBodies = new Map<string, Buffer>();

  constructor(options: BusClientOptions = {}) {
    this.brokerUrl = options.brokerUrl ?? defaultBrokerUrl();
    this.address = parseBrokerUrl(this.brokerUrl);
    this.name = options.name ?? "client";
    this.log = options.log ?? stderrLogger(this.name);
    this.incomingMs = options.heartbeatIncomingMs ?? 10_000;
    this.tolerance = options.heartbeatTolerance ?? 2;
    this.initialDelayMs = options.reconnectInitialDelayMs ?? 250;
    this.maxDelayMs = options.reconnectMaxDelayMs ?? 5_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    this.clockJumpMs = options.clockJumpMs ?? 0;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 30_000;

    // No credentials in the URL means the brokers' loopback default user, named explicitly: the
    // embedded broker refuses an anonymous CONNECT.
    const connectHeaders: StompHeaders = { login: this.address.login ?? "guest", passcode: this.address.passcode ?? "guest" };
    if (options.vhost !== undefined) connectHeaders.host = options.vhost;

    this.stomp = new Client({
      webSocketFactory: () => this.openTransport(),
      connectHeaders,
      heartbeatIncoming: this.incomingMs,
      heartbeatOutgoing: options.heartbeatOutgoingMs ?? 0,
      // Our own watchdog (monotonic clock) decides; stompjs's check uses Date.now(), which a restored guest moves backwards.
      heartbeatToleranceMultiplier: 1000,
      // stompjs retries 1 ms after a close; the real backoff happens in beforeConnect, where it can be cut short.
      reconnectDelay: 1,
      beforeConnect: () => this.backoff(),
      onConnect: (frame) => this.onConnected(frame),
      onWebSocketClose: () => this.onTransportClosed(),
      onStompError: (frame) => this.log("warn", `broker ERROR: ${frame.headers.message ?? ""} ${frame.body.slice(0, 500)}`.trim()),
      onUnhandledMessage: (message) => this.log("debug", `message for unknown subscription ${message.headers.subscription ?? "?"}`),
      debug: () => {},
    });
  }

  /** Current connection state. */
  get state(): BusState {
    return this.currentState;
  }

  get connected(): boolean {
    return this.currentState === "connected";
  }

  /** Bytes written to the socket that the kernel has not taken yet. */
  get bufferedBytes(): number {
    return this.transport?.socket.writableLength ?? 0;
  }

  /** Starts connecting (idempotent); reconnects on its own from then on until {@link close}. */
  start(): void {
    if (this.currentState !== "idle") return;
    this.setState("connecting");
    this.startWatchdog();
    this.stomp.activate();
  }

  /** {@link start}, then wait for the first connection. */
  async connect(timeoutMs = this.publishTimeoutMs): Promise<void> {
    this.start();
    await this.waitConnected(timeoutMs);
  }

  /** Resolves when connected; rejects after `timeoutMs` or when the client is closed. */
  waitConnected(timeoutMs = this.publishTimeoutMs): Promise<void> {
    if (this.currentState === "connected") return Promise.resolve();
    if (this.currentState === "closed") return Promise.reject(new BusClosedError());
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.connectWaiters = this.connectWaiters.filter((w) => w !== waiter);
        reject(new Error(`no connection to the broker at ${this.brokerUrl} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.connectWaiters.push(waiter);
    });
  }

  /** Calls `listener` on every state change; returns the function that removes it. */
  onState(listener: StateListener): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Sends `body` (text, or binary with `content-length`) to `destination`. Waits for a connection
   * first. With `receipt`, resolves only when the broker confirms; rejects if the connection
   * drops first (the message may or may not have arrived: callers that need exactly-once carry
   * an id the receiver de-duplicates on).
   */
  async publish(destination: string, body: string | Uint8Array, options: PublishOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? this.publishTimeoutMs;
    if (this.currentState !== "connected") await this.waitConnected(timeoutMs);
    const headers: StompHeaders = { ...options.headers };
    const params: IPublishParams =
      typeof body === "string"
        ? { destination, body, headers }
        : { destination, binaryBody: body, headers: { "content-type": "application/octet-stream", ...headers } };
    if (!options.receipt) {
      this.stomp.publish(params);
      return;
    }
    const receipt = `p-${++this.nextId}`;
    const confirmed = this.expectReceipt(receipt, timeoutMs, `publish to ${destination}`);
    (params.headers as StompHeaders).receipt = receipt;
    try {
      this.stomp.publish(params);
    } catch (e) {
      // Not written: settle the receipt now rather than leave it to reject unhandled later.
      const pending = this.receipts.get(receipt);
      if (pending) {
        clearTimeout(pending.timer);
        this.receipts.delete(receipt);
        pending.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    await confirmed;
  }

  /** {@link publish} of `JSON.stringify(value)` with `content-type: application/json`. */
  publishJson(destination: string, value: unknown, options: PublishOptions = {}): Promise<void> {
    return this.publish(destination, JSON.stringify(value), {
      ...options,
      headers: { "content-type": "application/json", ...options.headers },
    });
  }

  /**
   * Subscribes `handler` to `destination`, now and after every reconnect. Handler errors are
   * logged, never thrown into stompjs. In the client ack modes the handler acks or nacks.
   */
  subscribe(destination: string, handler: BusHandler, options: SubscribeOptions = {}): BusSubscription {
    // A caller-chosen `id` (RabbitMQ names a durable topic subscription's queue after it) must be unique on this client.
    const id = options.headers?.id ?? `s-${++this.nextId}`;
    if (this.subscriptions.has(id)) throw new Error(`subscription id '${id}' is already in use on this client`);
    let confirm!: () => void;
    const ready = new Promise<void>((resolve) => (confirm = resolve));
    const record: SubscriptionRecord = { id, destination, headers: subscribeHeaders(options), handler, confirmed: false, confirm };
    this.subscriptions.set(id, record);
    if (this.currentState === "connected") this.sendSubscribe(record);
    return {
      destination,
      ready,
      unsubscribe: () => {
        if (!this.subscriptions.delete(id)) return;
        if (this.currentState === "connected") {
          try {
            this.stomp.unsubscribe(id);
          } catch (e) {
            this.log("debug", `unsubscribe ${destination}: ${String(e)}`);
          }
        }
      },
    };
  }

  /**
   * {@link subscribe} with JSON bodies validated by `schema`. A body that is not JSON, does not
   * match, or exceeds `maxBodyBytes` (default 64 MiB) is logged with the reason and dropped (and
   * acked in the client ack modes, so it does not come back).
   */
  subscribeJson<T>(
    destination: string,
    schema: z.ZodType<T>,
    handler: BusJsonHandler<T>,
    options: SubscribeOptions & { maxBodyBytes?: number } = {},
  ): BusSubscription {
    const maxBytes = options.maxBodyBytes ?? DEFAULT_MAX_JSON_BYTES;
    const acks = (options.ack ?? "auto") !== "auto";
    return this.subscribe(
      destination,
      (message) => {
        const reason = (why: string) => {
          this.log("warn", `dropped message on ${destination}: ${why}`);
          if (acks) message.ack();
        };
        if (message.binaryBody.byteLength > maxBytes) return reason(`body of ${message.binaryBody.byteLength} bytes exceeds ${maxBytes}`);
        let raw: unknown;
        try {
          raw = JSON.parse(message.body);
        } catch (e) {
          return reason(`invalid JSON (${e instanceof Error ? e.message : String(e)})`);
        }
        const parsed = schema.safeParse(raw);
        if (!parsed.success) return reason(`schema mismatch: ${describeIssues(parsed.error)}`);
        return handler(parsed.data, message);
      },
      options,
    );
  }

  /**
   * Resolves when the socket's write buffer is at most `lowWaterBytes` (default 1 MiB), or when
   * the connection drops (the caller's next publish then waits for a reconnect).
   */
  drained(lowWaterBytes = 1024 * 1024): Promise<void> {
    if (this.bufferedBytes <= lowWaterBytes || !this.transport) return Promise.resolve();
    return new Promise((resolve) => {
      const socket = this.transport?.socket;
      if (!socket) return resolve();
      const check = () => {
        if (this.transport?.socket !== socket || socket.writableLength <= lowWaterBytes) {
          socket.off("drain", check);
          this.drainWaiters = this.drainWaiters.filter((w) => w !== check);
          resolve();
        }
      };
      socket.on("drain", check);
      this.drainWaiters.push(check);
    });
  }

  /**
   * Drops the current connection and reconnects at once, skipping any backoff wait (for
   * example when the guest was just restored from a snapshot).
   */
  reconnectNow(reason: string): void {
    if (this.currentState === "closed" || this.currentState === "idle") return;
    this.log("info", `reconnecting now: ${reason}`);
    this.attempts = 1;
    if (this.wakeBackoff) this.wakeBackoff();
    else this.transport?.wrapper.terminate();
  }

  /** Disconnects (DISCONNECT with receipt, so prior frames are flushed) and stops reconnecting. */
  async close(): Promise<void> {
    if (this.currentState === "closed") return;
    const wasConnected = this.currentState === "connected";
    this.setState("closed");
    if (this.watchdog) clearInterval(this.watchdog);
    this.wakeBackoff?.();
    for (const [id, pending] of this.receipts) {
      clearTimeout(pending.timer);
      pending.reject(new BusClosedError());
      this.receipts.delete(id);
    }
    for (const waiter of this.connectWaiters.splice(0)) waiter.reject(new BusClosedError());
    const graceful = wasConnected ? this.stomp.deactivate() : this.stomp.deactivate({ force: true });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 2_000)));
    if (await Promise.race([graceful.then(() => false), timedOut])) {
      this.transport?.wrapper.terminate();
      await this.stomp.deactivate({ force: true }).catch(() => undefined);
    }
    clearTimeout(timer);
  }

  private openTransport(): TcpStompSocket["wrapper"] {
    const transport = openTcpStompSocket(this.address.host, this.address.port);
    this.log("debug", `connecting to ${this.address.host}:${this.address.port}`);
    transport.socket.once("connect", () => this.log("debug", "TCP connected, sending CONNECT"));
    const generation = ++this.generation;
    this.transport = transport;
    this.lastActivity = performance.now();
    transport.socket.on("data", () => (this.lastActivity = performance.now()));
    this.interceptLargeBodies(transport);
    const giveUp = setTimeout(() => {
      if (this.generation === generation && this.currentState !== "connected") {
        this.log("debug", `connect to ${this.brokerUrl} timed out`);
        transport.wrapper.terminate();
      }
    }, this.connectTimeoutMs);
    transport.socket.once("close", () => clearTimeout(giveUp));
    return transport.wrapper;
  }

  /** Puts a {@link LargeBodyFilter} between the socket and stompjs' parser. */
  private interceptLargeBodies(transport: TcpStompSocket): void {
    const filter = new LargeBodyFilter(LARGE_BODY_BYTES, this.largeBodies);
    let stompHandler: (event: IStompSocketMessageEvent) => void = () => undefined;
    const filtered = (event: IStompSocketMessageEvent) => {
      const data = filter.transform(event.data as unknown as Buffer);
      try {
        // tcp-wrapper hands stompjs Buffers too, despite the declared type.
        if (data.length > 0) stompHandler({ data: data as unknown as ArrayBuffer });
      } finally {
        // Delivery happened synchronously above; a ref left over belongs to a message nobody took.
        this.largeBodies.clear();
      }
    };
    // tcp-wrapper calls `this.onmessage(...)` per chunk; stompjs assigns its handler later.
    Object.defineProperty(transport.wrapper, "onmessage", {
      configurable: true,
      get: () => filtered,
      set: (handler: (event: IStompSocketMessageEvent) => void) => void (stompHandler = handler),
    });
  }

  private async backoff(): Promise<void> {
    if (this.currentState === "closed") return;
    const attempt = this.attempts++;
    if (attempt === 0) return;
    this.setState("reconnecting");
    if (attempt === 1) return;
    const base = Math.min(this.initialDelayMs * 2 ** (attempt - 2), this.maxDelayMs);
    const delay = base / 2 + (Math.random() * base) / 2;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, delay);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeBackoff = done;
    });
    this.wakeBackoff = undefined;
  }

  private onConnected(frame: IFrame): void {
    if (this.currentState === "closed") return;
    this.attempts = 0;
    const [brokerSends] = (frame.headers["heart-beat"] ?? "0,0").split(",").map((n) => Number(n) || 0);
    this.silenceLimitMs = this.incomingMs > 0 && (brokerSends ?? 0) > 0 ? Math.max(this.incomingMs, brokerSends ?? 0) * this.tolerance : 0;
    this.lastActivity = performance.now();
    for (const record of this.subscriptions.values()) this.sendSubscribe(record);
    this.setState("connected");
    for (const waiter of this.connectWaiters.splice(0)) waiter.resolve();
  }

  private onTransportClosed(): void {
    for (const check of this.drainWaiters.splice(0)) check();
    for (const [id, pending] of this.receipts) {
      clearTimeout(pending.timer);
      pending.reject(new Error("connection to the broker lost before its receipt"));
      this.receipts.delete(id);
    }
    this.transport = undefined;
    if (this.currentState === "closed") return;
    if (this.currentState === "connected") this.setState("disconnected", "connection lost");
  }

  private sendSubscribe(record: SubscriptionRecord): void {
    const generation = this.generation;
    const headers: StompHeaders = { ...record.headers, id: record.id };
    if (!record.confirmed) {
      const receipt = `s-${++this.nextId}`;
      headers.receipt = receipt;
      this.expectReceipt(receipt, this.publishTimeoutMs, `subscribe ${record.destination}`).then(
        () => {
          record.confirmed = true;
          record.confirm();
        },
        () => undefined,
      );
    }
    try {
      this.stomp.subscribe(record.destination, (m) => this.deliver(record, m, generation), headers);
    } catch (e) {
      this.log("debug", `subscribe ${record.destination}: ${String(e)}`);
    }
  }

  private deliver(record: SubscriptionRecord, m: IMessage, generation: number): void {
    if (!this.subscriptions.has(record.id)) return;
    // A message settles once: a second ACK of the same tag is a protocol error on RabbitMQ and on
    // the embedded broker (ERROR "unknown delivery tag", connection closed), so later calls are no-ops.
    let settled = false;
    const settle = (kind: "ack" | "nack") => {
      if (settled || generation !== this.generation || this.currentState !== "connected") return;
      settled = true;
      try {
        if (kind === "ack") m.ack();
        else m.nack();
      } catch (e) {
        this.log("debug", `${kind} on ${record.destination}: ${String(e)}`);
      }
    };
    const ref = m.headers[BODY_REF_HEADER];
    const large = ref !== undefined ? this.largeBodies.get(ref) : undefined;
    if (ref !== undefined) this.largeBodies.delete(ref);
    let headers = m.headers;
    if (ref !== undefined) {
      const { [BODY_REF_HEADER]: _ref, ...rest } = m.headers;
      headers = large ? { ...rest, "content-length": String(large.length) } : rest;
    }
    const message: BusMessage = {
      destination: m.headers.destination ?? record.destination,
      headers,
      get body() {
        return large ? large.toString("utf8") : m.body;
      },
      get binaryBody() {
        return large ?? m.binaryBody;
      },
      ack: () => settle("ack"),
      nack: () => settle("nack"),
    };
    try {
      const result = record.handler(message);
      if (result && typeof (result as Promise<void>).then === "function") {
        (result as Promise<void>).catch((e: unknown) => this.log("error", `handler for ${record.destination} failed: ${errorText(e)}`));
      }
    } catch (e) {
      this.log("error", `handler for ${record.destination} failed: ${errorText(e)}`);
    }
  }

  private expectReceipt(receipt: string, timeoutMs: number, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.receipts.delete(receipt);
        reject(new Error(`${what}: no receipt within ${timeoutMs} ms`));
      }, timeoutMs);
      this.receipts.set(receipt, { resolve, reject, timer });
      this.stomp.watchForReceipt(receipt, () => {
        const pending = this.receipts.get(receipt);
        if (!pending) return;
        clearTimeout(pending.timer);
        this.receipts.delete(receipt);
        pending.resolve();
      });
    });
  }

  private startWatchdog(): void {
    const period = Math.max(50, Math.min(250, this.incomingMs > 0 ? this.incomingMs / 4 : 250));
    let lastTick = performance.now();
    this.watchdog = setInterval(() => {
      // After an event-loop stall, heart-beats may be waiting unread in the socket: let them be read first.
      const tick = performance.now();
      const stalled = tick - lastTick > period * 4;
      lastTick = tick;
      if (this.clockJumpMs > 0) {
        const offset = Date.now() - performance.now();
        const jump = offset - this.clockOffset;
        this.clockOffset = offset;
        if (Math.abs(jump) > this.clockJumpMs && this.currentState === "connected") {
          this.reconnectNow(`wall clock jumped ${Math.round(jump)} ms against the monotonic clock`);
          return;
        }
      }
      if (this.currentState === "connected" && this.silenceLimitMs > 0 && !stalled) {
        const silent = performance.now() - this.lastActivity;
        if (silent > this.silenceLimitMs) {
          this.log("warn", `no data from the broker for ${Math.round(silent)} ms: dropping the connection`);
          this.transport?.wrapper.terminate();
        }
      }
    }, period);
    this.watchdog.unref();
  }

  private setState(state: BusState, reason?: string): void {
    if (this.currentState === state) return;
    if (this.currentState === "closed") return;
    this.currentState = state;
    this.log("debug", `state ${state}${reason ? ` (${reason})` : ""}`);
    for (const listener of this.stateListeners) {
      try {
        listener(state, reason);
      } catch (e) {
        this.log("error", `state listener failed: ${errorText(e)}`);
      }
    }
  }
}

function subscribeHeaders(options: SubscribeOptions): StompHeaders {
  const headers: StompHeaders = { ack: options.ack ?? "auto" };
  if (options.prefetch !== undefined) headers["prefetch-count"] = String(options.prefetch);
  if (options.durable !== undefined) headers.durable = String(options.durable);
  if (options.autoDelete !== undefined) headers["auto-delete"] = String(options.autoDelete);
  if (options.expiresMs !== undefined) headers["x-expires"] = String(options.expiresMs);
  return { ...headers, ...options.headers };
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
    .join("; ");
}

function errorText(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}

/** Creates a client and starts connecting. */
export function createBusClient(options: BusClientOptions = {}): BusClient {
  const client = new BusClient(options);
  client.start();
  return client;
}
