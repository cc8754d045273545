/**
 * The embedded STOMP broker: listens, owns queues, topic bindings and the journal, and runs one
 * coarse timer for heart-beats, connect deadlines and expiry (no per-message timers).
 */
import { createServer, type Server, type Socket } from "node:net";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { Connection } from "./connection";
import { Queue, type QueueArgs, type QueueOwner } from "./queue";
import { forwardedHeaders, messageBytes, type StoredMessage } from "./message";
import { Journal, declareRecord, enqueueRecord } from "./journal";
import { topicMatches, type Destination } from "./destination";
import { errorKind } from "./refusal";
import type { Frame } from "./frame";
import type { UserTable } from "./auth";
import type { ParserLimits } from "./parser";
import { pidAlive } from "../pid";

export interface BrokerLimits extends ParserLimits {
  maxConnections: number;
  /** A connection must complete CONNECT within this many ms. */
  connectTimeoutMs: number;
  /** Sum of partial-frame bytes held for all connections. */
  maxInputBytes: number;
  /** Unsent bytes per connection before deliveries to it pause. */
  maxOutputBytes: number;
  /** Bytes of all messages held (queued or unacked) before SENDs are refused. */
  maxQueuedBytes: number;
  maxSubscriptions: number;
  maxTransactions: number;
  maxTransactionFrames: number;
  /** Floor for negotiated heart-beat intervals. */
  minHeartbeatMs: number;
  /** Journal size from which a mostly-dead journal is compacted. */
  journalCompactBytes: number;
  /** Queues declared by name (`/queue/`, durable topic subscriptions). */
  maxQueues: number;
}

export const defaultLimits: BrokerLimits = {
  maxHeaderBytes: 64 * 1024,
  maxHeaders: 256,
  maxBodyBytes: 64 * 1024 * 1024,
  maxConnections: 10_000,
  connectTimeoutMs: 10_000,
  maxInputBytes: 512 * 1024 * 1024,
  maxOutputBytes: 4 * 1024 * 1024,
  maxQueuedBytes: 1024 * 1024 * 1024,
  maxSubscriptions: 1024,
  maxTransactions: 64,
  maxTransactionFrames: 10_000,
  minHeartbeatMs: 100,
  journalCompactBytes: 16 * 1024 * 1024,
  maxQueues: 100_000,
};

export interface BrokerOptions {
  host: string;
  port: number;
  /** Journal directory; without it nothing is persisted. */
  dataDir?: string;
  users: UserTable;
  limits?: Partial<BrokerLimits>;
  log?: (line: string) => void;
  /** The journal could not write or fsync: persistence is broken and the broker should stop. */
  onFatal?: (err: Error) => void;
}

const queueDefaults: QueueArgs = { durable: true, autoDelete: false, messageTtl: 0, expires: 0, maxLength: 0 };

export class Broker implements QueueOwner {
  readonly limits: BrokerLimits;
  readonly users: UserTable;
  readonly stats = { connections: 0, errors: 0 };
  inputBytes = 0;
  queuedBytes = 0;
  private readonly server: Server;
  private readonly conns = new Set<Connection>();
  private readonly connecting = new Set<Connection>();
  private readonly queues = new Map<string, Queue>();
  private readonly exactBindings = new Map<string, Set<Queue>>();
  private readonly wildcardBindings = new Map<Queue, string[]>();
  private readonly bindingOf = new Map<Queue, string>();
  /** Queues with `x-expires`, checked every tick (RabbitMQ expires them within ms, not seconds). */
  private readonly expiring = new Set<Queue>();
  private readonly persistentLive = new Map<number, { queue: string; m: StoredMessage }>();
  private journal: Journal | undefined;
  private nextId = 1;
  private nextConnId = 1;
  private timer: NodeJS.Timeout | undefined;
  private lastExpirySweep = 0;
  private readonly log: (line: string) => void;

  constructor(private readonly opts: BrokerOptions) {
    this.limits = { ...defaultLimits, ...opts.limits };
    this.users = opts.users;
    this.log = opts.log ?? (() => {});
    this.server = createServer({ noDelay: true }, (s) => this.accept(s));
    this.server.maxConnections = this.limits.maxConnections;
  }

  /** Recovers the journal (if any) and starts listening. Resolves with the bound port. */
  async start(): Promise<number> {
    // Listen first: the port decides which of two racing brokers owns the data dir. Recovery
    // runs synchronously in the listen callback, before any connection is accepted.
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off("error", reject);
        try {
          if (this.opts.dataDir) {
            lockDataDir(this.opts.dataDir);
            this.recover(this.opts.dataDir);
          }
          resolve();
        } catch (err) {
          this.server.close();
          reject(err);
        }
      });
    });
    this.timer = setInterval(() => this.tick(), 100);
    this.timer.unref();
    const a = this.server.address();
    return typeof a === "object" && a ? a.port : this.opts.port;
  }

  /** Stops accepting, closes connections and flushes the journal (clean shutdown). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const c of this.conns) c.socket.destroy();
    await this.journal?.close();
    if (this.opts.dataDir) unlockDataDir(this.opts.dataDir);
    await closed;
  }

  private recover(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const journal = new Journal(dir, () => this.snapshotRecords(), (err) => {
        this.log(`journal error: ${err.message}`);
        this.opts.onFatal?.(err);
      },
      this.limits.journalCompactBytes,
    );
    journal.onCompact = (before, after) => this.log(`journal compacted: ${before} → ${after} bytes`);
    const r = journal.recover();
    for (const [name, rq] of r.queues) {
      const q = new Queue(name, { ...queueDefaults, ...rq.args, durable: true }, this);
      this.queues.set(name, q);
      if (q.args.expires > 0) this.expiring.add(q);
      if (rq.binding !== undefined) this.bind(q, rq.binding);
    }
    this.nextId = r.maxId + 1;
    const records: Buffer[] = [];
    for (const [name, q] of this.queues) records.push(declareRecord(name, q.args, this.bindingOf.get(q)));
    const sizes = new Map<number, number>();
    for (const jm of r.messages) {
      let q = this.queues.get(jm.queue);
      if (!q) {
        q = new Queue(jm.queue, { ...queueDefaults }, this);
        this.queues.set(jm.queue, q);
        records.push(declareRecord(jm.queue, q.args));
      }
      const m: StoredMessage = { id: jm.id, destination: jm.destination, headers: jm.headers, body: jm.body, persistent: true, expiresAt: jm.expiresAt, redelivered: true, journaled: true };
      const rec = enqueueRecord({ ...jm });
      records.push(rec);
      sizes.set(jm.id, rec.length);
      this.queuedBytes += messageBytes(m);
      this.persistentLive.set(m.id, { queue: jm.queue, m });
      q.enqueue(m);
    }
    journal.rewrite(records);
    for (const [id, size] of sizes) journal.adopt(id, size);
    this.journal = journal;
    this.log(`journal: recovered ${r.messages.length} persistent message(s) in ${r.queues.size} durable queue(s)${r.tornBytes ? `, dropped a torn tail of ${r.tornBytes} bytes` : ""}`);
  }

  private snapshotRecords(): Buffer[] {
    const records: Buffer[] = [];
    for (const [name, q] of this.queues) if (q.args.durable && q.exclusiveTo === undefined) records.push(declareRecord(name, q.args, this.bindingOf.get(q)));
    for (const { queue, m } of this.persistentLive.values()) {
      records.push(enqueueRecord({ id: m.id, queue, destination: m.destination, headers: m.headers, body: m.body, expiresAt: m.expiresAt }));
    }
    return records;
  }

  private accept(socket: Socket): void {
    const conn = new Connection(this.nextConnId++, socket, this);
    this.conns.add(conn);
    this.connecting.add(conn);
    this.stats.connections++;
  }

  connected(c: Connection): void {
    this.connecting.delete(c);
  }

  disconnected(c: Connection): void {
    this.connecting.delete(c);
  }

  gone(c: Connection): void {
    this.conns.delete(c);
    this.connecting.delete(c);
  }

  afterDurable(cb: () => void): void {
    if (this.journal) this.journal.barrier(cb);
    else cb();
  }

  /** A message is done (acked, auto-acked on delivery, expired or dropped). */
  finish(m: StoredMessage): void {
    this.queuedBytes -= messageBytes(m);
    if (m.journaled) {
      m.journaled = false;
      this.persistentLive.delete(m.id);
      this.journal?.remove(m.id);
    }
  }

  discard(_q: Queue, m: StoredMessage): void {
    this.finish(m);
  }

  unused(q: Queue): void {
    this.deleteQueue(q);
  }

  queueAlive(q: Queue): boolean {
    return this.queues.get(q.name) === q;
  }

  deleteQueue(q: Queue): void {
    if (this.queues.get(q.name) !== q) return;
    this.queues.delete(q.name);
    this.expiring.delete(q);
    for (const m of q.drain()) this.finish(m);
    this.unbind(q);
    if (q.args.durable && q.exclusiveTo === undefined) this.journal?.deleteQueue(q.name);
  }

  /** An exclusive, auto-delete queue for a topic subscription or a temp queue. */
  exclusiveQueue(c: Connection, name: string | undefined): Queue {
    let n = name ?? "amq.gen-" + randomBytes(16).toString("base64url");
    if (this.queues.has(n)) n = "amq.gen-" + randomBytes(16).toString("base64url");
    const q = new Queue(n, { ...queueDefaults, durable: false, autoDelete: true }, this, c.id);
    this.queues.set(n, q);
    return q;
  }

  /**
   * Declares `/queue/<name>` from a frame's headers, as RabbitMQ does on SEND and SUBSCRIBE: an
   * existing queue must be declared with equivalent arguments (absent headers mean defaults), and
   * `durable:false` makes an exclusive queue of the declaring connection (auto-delete unless told
   * otherwise), which other connections cannot declare (RESOURCE_LOCKED).
   */
  private declare(c: Connection, name: string, headers: Map<string, string>): Queue | string {
    const args = queueArgs(headers);
    if (typeof args === "string") return args;
    const exclusive = !args.durable;
    if (exclusive && !headers.has("auto-delete")) args.autoDelete = true;
    const existing = this.queues.get(name);
    if (existing) {
      if (existing.exclusiveTo !== undefined && existing.exclusiveTo !== c.id) return `RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${name}' in vhost '/'`;
      const diff = inequivalence(name, existing.args, args);
      if (diff) return diff;
      existing.lastUsed = Date.now(); // redeclaring renews an x-expires lease, as in RabbitMQ
      return existing;
    }
    if (this.queues.size >= this.limits.maxQueues) return `RESOURCE_LIMIT - the broker already holds ${this.limits.maxQueues} queues`;
    const q = new Queue(name, args, this, exclusive ? c.id : undefined);
    this.queues.set(name, q);
    if (args.expires > 0) this.expiring.add(q);
    if (exclusive) c.ownQueue(q);
    else this.journal?.declare(name, args);
    return q;
  }

  /** The queue a SUBSCRIBE consumes from, or the reason it cannot. */
  subscribeQueue(c: Connection, d: Destination, headers: Map<string, string>): { queue: Queue; owned: boolean } | string {
    if (d.kind === "queue") {
      const q = d.declare ? this.declare(c, d.name, headers) : this.queues.get(d.name);
      if (q === undefined) return `NOT_FOUND - no queue '${d.name}' in vhost '/'`;
      if (typeof q === "string") return q;
      if (q.exclusiveTo !== undefined && q.exclusiveTo !== c.id) return `RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${d.name}' in vhost '/'`;
      return { queue: q, owned: false };
    }
    if (d.kind !== "topic") return "invalid destination";
    if (headers.get("durable") === "true" || headers.get("persistent") === "true") {
      const id = headers.get("id");
      if (id === undefined) return "Missing 'id' header: a durable topic subscription needs an id";
      const name = headers.get("x-queue-name") ?? durableSubscriptionQueue(d.key, id);
      let q = this.queues.get(name);
      if (!q) {
        const args = queueArgs(headers);
        if (typeof args === "string") return args;
        args.durable = true;
        if (this.queues.size >= this.limits.maxQueues) return `RESOURCE_LIMIT - the broker already holds ${this.limits.maxQueues} queues`;
        q = new Queue(name, args, this);
        this.queues.set(name, q);
        if (args.expires > 0) this.expiring.add(q);
        this.bind(q, d.key);
        this.journal?.declare(name, args, d.key);
      } else if (q.exclusiveTo !== undefined) return `RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${name}' in vhost '/'`;
      return { queue: q, owned: false };
    }
    const q = this.exclusiveQueue(c, headers.get("x-queue-name"));
    const ttl = intHeader(headers, "x-message-ttl");
    if (typeof ttl === "number") (q.args as QueueArgs).messageTtl = ttl;
    this.bind(q, d.key);
    return { queue: q, owned: true };
  }

  /** Routes a SEND. Returns [summary, detail] when refused. */
  publish(c: Connection, dest: string, d: Destination, f: Frame, replyTo: string | undefined): [string, string] | undefined {
    const exp = f.headers.get("expiration");
    let expiresAt = 0;
    if (exp !== undefined) {
      if (!/^\d{1,12}$/.test(exp)) return ["Bad header", `Invalid expiration '${exp.slice(0, 40)}': expected milliseconds`];
      expiresAt = Date.now() + Number(exp);
    }
    const size = f.body.length + 256;
    if (this.queuedBytes + size > this.limits.maxQueuedBytes) return ["Resource limit", `the broker holds ${this.limits.maxQueuedBytes} bytes of messages; SEND refused`];
    const headers = forwardedHeaders(f.headers);
    if (replyTo !== undefined) {
      const i = headers.findIndex(([k]) => k === "reply-to");
      if (i >= 0) headers[i] = ["reply-to", replyTo];
    }
    const persistent = f.headers.get("persistent") === "true";
    const base: StoredMessage = { id: 0, destination: dest, headers, body: f.body, persistent, expiresAt, redelivered: false, journaled: false };
    if (d.kind === "queue") {
      const q = d.declare ? this.declare(c, d.name, f.headers) : this.queues.get(d.name);
      if (q === undefined) return ["not_found", `NOT_FOUND - no queue '${d.name}' in vhost '/'`];
      if (typeof q === "string") return [errorKind(q), q];
      this.enqueue(q, base);
      return undefined;
    }
    if (d.kind === "topic") {
      const targets = new Set<Queue>(this.exactBindings.get(d.key));
      if (this.wildcardBindings.size) {
        const words = d.key.split(".");
        for (const [q, pattern] of this.wildcardBindings) if (topicMatches(pattern, words)) targets.add(q);
      }
      for (const q of targets) this.enqueue(q, { ...base });
    }
    return undefined;
  }

  private enqueue(q: Queue, m: StoredMessage): void {
    m.id = this.nextId++;
    this.queuedBytes += messageBytes(m);
    if (m.persistent && q.args.durable && this.journal && q.exclusiveTo === undefined) {
      m.journaled = true;
      if (q.args.messageTtl > 0) {
        const e = Date.now() + q.args.messageTtl;
        if (m.expiresAt === 0 || e < m.expiresAt) m.expiresAt = e;
      }
      this.persistentLive.set(m.id, { queue: q.name, m });
      this.journal.enqueue({ id: m.id, queue: q.name, destination: m.destination, headers: m.headers, body: m.body, expiresAt: m.expiresAt });
    }
    q.enqueue(m);
  }

  private bind(q: Queue, key: string): void {
    this.bindingOf.set(q, key);
    if (key.includes("*") || key.includes("#")) this.wildcardBindings.set(q, key.split("."));
    else {
      let set = this.exactBindings.get(key);
      if (!set) this.exactBindings.set(key, (set = new Set()));
      set.add(q);
    }
  }

  private unbind(q: Queue): void {
    const key = this.bindingOf.get(q);
    if (key === undefined) return;
    this.bindingOf.delete(q);
    this.wildcardBindings.delete(q);
    const set = this.exactBindings.get(key);
    if (set) {
      set.delete(q);
      if (set.size === 0) this.exactBindings.delete(key);
    }
  }

  private tick(): void {
    const now = Date.now();
    for (const c of this.connecting) {
      if (now - c.openedAt > this.limits.connectTimeoutMs) c.error("Connect timeout", `no CONNECT frame within ${this.limits.connectTimeoutMs} ms`);
    }
    for (const c of this.conns) {
      if (c.state !== "open") continue;
      if (c.hbIn > 0 && now - c.lastRead > 2 * c.hbIn) {
        this.log(`connection ${c.id}: no data for ${now - c.lastRead} ms (heart-beat ${c.hbIn} ms): closing`);
        c.socket.destroy();
        continue;
      }
      if (c.hbOut > 0 && now - c.lastWrite >= c.hbOut) c.heartbeat();
    }
    for (const q of this.expiring) if (q.consumers.length === 0 && now - q.lastUsed > q.args.expires) this.deleteQueue(q);
    if (now - this.lastExpirySweep >= 1000) {
      this.lastExpirySweep = now;
      for (const q of this.queues.values()) q.expireHead(now);
    }
  }
}

const argNames: Array<[keyof QueueArgs, string]> = [["durable", "durable"], ["autoDelete", "auto_delete"], ["messageTtl", "x-message-ttl"], ["expires", "x-expires"], ["maxLength", "x-max-length"]];

/** RabbitMQ's PRECONDITION_FAILED text when a redeclaration differs, else undefined. */
function inequivalence(name: string, current: QueueArgs, requested: QueueArgs): string | undefined {
  for (const [key, label] of argNames) {
    if (current[key] === requested[key]) continue;
    if (key === "durable" || key === "autoDelete") return `PRECONDITION_FAILED - inequivalent arg '${label}' for queue '${name}' in vhost '/': received '${requested[key]}' but current is '${current[key]}'`;
    const received = requested[key] === 0 ? "none" : `the value '${requested[key]}' of type 'signedint'`;
    const now = current[key] === 0 ? "none" : `the value '${current[key]}' of type 'signedint'`;
    return `PRECONDITION_FAILED - inequivalent arg '${label}' for queue '${name}' in vhost '/': received ${received} but current is ${now}`;
  }
  return undefined;
}

/** Queue name of a durable topic subscription, stable for the same destination and id. */
function durableSubscriptionQueue(key: string, id: string): string {
  return "stomp-subscription-" + createHash("md5").update(`/topic/${key}\n${id}`).digest("base64url");
}

/** `<data>/broker.pid` doubles as the data dir lock: a live pid in it keeps other brokers out. */
function lockDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "broker.pid");
  try {
    writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
    return;
  } catch {
    // exists: stale (kill -9) or another live broker
  }
  const pid = Number(readFileSync(file, "utf8").trim());
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) throw new Error(`data dir ${dir} is in use by broker pid ${pid}`);
  writeFileSync(file, `${process.pid}\n`);
}

function unlockDataDir(dir: string): void {
  const file = join(dir, "broker.pid");
  try {
    if (readFileSync(file, "utf8").trim() === String(process.pid)) rmSync(file, { force: true });
  } catch {
    // already gone
  }
}

function intHeader(h: Map<string, string>, name: string): number | string | undefined {
  const v = h.get(name);
  if (v === undefined) return undefined;
  if (!/^\d{1,12}$/.test(v)) return `PRECONDITION_FAILED - invalid arg '${name}': '${v.slice(0, 40)}'`;
  return Number(v);
}

function queueArgs(h: Map<string, string>): QueueArgs | string {
  const args: QueueArgs = { ...queueDefaults };
  if (h.has("durable")) args.durable = h.get("durable") === "true";
  if (h.has("auto-delete")) args.autoDelete = h.get("auto-delete") === "true";
  for (const [key, header] of [["messageTtl", "x-message-ttl"], ["expires", "x-expires"], ["maxLength", "x-max-length"]] as const) {
    const v = intHeader(h, header);
    if (typeof v === "string") return v;
    if (v !== undefined) args[key] = v;
  }
  return args;
}
