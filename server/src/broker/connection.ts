/**
 * One client connection: the STOMP state machine on top of the frame parser. Outgoing frames
 * are single Buffers written inside a cork that is released on the next tick, so a burst of
 * deliveries becomes one socket write.
 */
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { escapeHeader, serializeFrame, type Frame, type StompVersion } from "./frame";
import { FrameParser, ProtocolError } from "./parser";
import { headerBlock, type StoredMessage } from "./message";
import type { Consumer, Queue } from "./queue";
import type { Broker } from "./broker";
import { errorKind } from "./refusal";
import { authenticate } from "./auth";
import { parseDestination } from "./destination";

export type AckMode = "auto" | "client" | "client-individual";

export class Subscription implements Consumer {
  /** Delivery tag → message, in delivery order (client mode acks cumulatively). */
  readonly unacked = new Map<number, StoredMessage>();
  /** `id`, escaped for the connection's version. */
  readonly escapedId: string;
  /** `T_<id>@@<session>@@`, escaped: a message-id/ack id is this plus the delivery tag. */
  readonly escapedIdPrefix: string;
  constructor(
    readonly conn: Connection,
    readonly id: string,
    readonly queue: Queue,
    readonly ackMode: AckMode,
    readonly prefetch: number,
    /** Exclusive queue owned by this subscription (topic subscriptions): deleted with it. */
    readonly ownsQueue: boolean,
  ) {
    this.escapedId = escapeHeader(id, conn.version);
    this.escapedIdPrefix = "T_" + this.escapedId + "@@" + conn.session + "@@";
  }

  hasCredit(): boolean {
    return this.conn.canDeliver() && (this.ackMode === "auto" || this.prefetch === 0 || this.unacked.size < this.prefetch);
  }

  deliver(m: StoredMessage): void {
    this.conn.deliver(this, m);
  }
}

const versions: StompVersion[] = ["1.2", "1.1", "1.0"];

export class Connection {
  readonly parser: FrameParser;
  version: StompVersion = "1.2";
  state: "connecting" | "open" | "closing" | "closed" = "connecting";
  readonly session = "session-" + randomBytes(9).toString("base64url");
  readonly subs = new Map<string, Subscription>();
  private readonly tags = new Map<number, Subscription>();
  private tagSeq = 0;
  private tx: Map<string, Frame[]> | undefined;
  private tempQueues: Map<string, Queue> | undefined;
  /** Exclusive `/queue/` queues this connection declared (`durable:false`): deleted with it. */
  private ownedQueues: Queue[] | undefined;
  /** Negotiated heart-beats in ms: we send every `hbOut`, expect data every `hbIn`. */
  hbOut = 0;
  hbIn = 0;
  lastRead = Date.now();
  lastWrite = Date.now();
  readonly openedAt = Date.now();
  private corked = false;
  private congested = false;
  private buffered = 0;
  /** The frame being handled, so an ERROR can name its receipt. */
  private current: Frame | undefined;

  constructor(
    readonly id: number,
    readonly socket: Socket,
    private readonly broker: Broker,
  ) {
    this.parser = new FrameParser(broker.limits, (f) => this.onFrame(f), () => {});
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => {
      if (!this.congested) return;
      this.congested = false;
      for (const s of this.subs.values()) s.queue.dispatch();
    });
    socket.on("error", () => {});
    socket.on("close", () => this.cleanup());
  }

  ownQueue(q: Queue): void {
    (this.ownedQueues ??= []).push(q);
  }

  canDeliver(): boolean {
    return this.state === "open" && !this.congested;
  }

  private onData(chunk: Buffer): void {
    this.lastRead = Date.now();
    try {
      this.parser.push(chunk);
    } catch (err) {
      if (err instanceof ProtocolError) this.error(err.summary, err.message);
      else this.error("Internal error", err instanceof Error ? err.message : String(err));
      return;
    }
    const now = this.parser.buffered;
    this.broker.inputBytes += now - this.buffered;
    this.buffered = now;
    if (this.broker.inputBytes > this.broker.limits.maxInputBytes && now > 0) {
      this.error("Resource limit", "the broker is holding too many partial frames; retry later");
    }
  }

  write(buf: Buffer): void {
    if (this.state === "closed" || this.socket.writableEnded || this.socket.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(buf);
    this.lastWrite = Date.now();
    if (this.socket.writableLength > this.broker.limits.maxOutputBytes) this.congested = true;
  }

  heartbeat(): void {
    this.write(Buffer.from("\n"));
  }

  deliver(sub: Subscription, m: StoredMessage): void {
    const tag = ++this.tagSeq;
    // The session id is base64url and the tag digits: only the subscription id needs escaping.
    const msgId = sub.escapedIdPrefix + tag;
    let head = "subscription:" + sub.escapedId + "\nmessage-id:" + msgId + "\nredelivered:" + m.redelivered + "\n";
    if (sub.ackMode !== "auto") {
      if (this.version === "1.2") head += "ack:" + msgId + "\n";
      sub.unacked.set(tag, m);
      this.tags.set(tag, sub);
    }
    this.write(serializeFrame("MESSAGE", [], m.body, this.version, head + headerBlock(m, this.version)));
    if (sub.ackMode === "auto") this.broker.finish(m);
  }

  private onFrame(f: Frame): void {
    this.current = f;
    try {
      this.handle(f);
    } finally {
      this.current = undefined;
    }
  }

  private handle(f: Frame): void {
    if (this.state === "closing" || this.state === "closed") return;
    if (this.state === "connecting") {
      if (f.command !== "CONNECT" && f.command !== "STOMP") return this.error("Illegal command", "You must log in using CONNECT first");
      return this.onConnect(f);
    }
    switch (f.command) {
      case "SEND":
        return this.txOr(f, () => this.onSend(f));
      case "SUBSCRIBE":
        return this.onSubscribe(f);
      case "UNSUBSCRIBE":
        return this.onUnsubscribe(f);
      case "ACK":
      case "NACK":
        return this.txOr(f, () => this.onAck(f));
      case "BEGIN":
      case "COMMIT":
      case "ABORT":
        return this.onTransaction(f);
      case "DISCONNECT":
        return this.receipt(f, () => this.close());
      default:
        return this.error("Bad CONNECT", "Already connected");
    }
  }

  private onConnect(f: Frame): void {
    const accepted = (f.headers.get("accept-version") ?? "1.0").split(",").map((v) => v.trim());
    const version = versions.find((v) => accepted.includes(v));
    if (!version) {
      return this.error("Version mismatch", `Supported versions are 1.0,1.1,1.2`, [["version", "1.0,1.1,1.2"]]);
    }
    this.version = version;
    this.parser.version = version;
    const refused = authenticate(this.broker.users, f.headers.get("login"), f.headers.get("passcode"), this.socket.remoteAddress);
    if (refused) return this.error("Access refused", refused);
    const hb = f.headers.get("heart-beat") ?? "0,0";
    const m = /^\s*(\d{1,9})\s*,\s*(\d{1,9})\s*$/.exec(hb);
    if (!m) return this.error("Bad CONNECT", `invalid heart-beat header '${hb.slice(0, 40)}'`);
    const cx = Number(m[1]);
    const cy = Number(m[2]);
    this.hbOut = cy > 0 ? Math.max(cy, this.broker.limits.minHeartbeatMs) : 0;
    this.hbIn = cx > 0 ? Math.max(cx, this.broker.limits.minHeartbeatMs) : 0;
    this.state = "open";
    this.broker.connected(this);
    this.write(
      serializeFrame("CONNECTED", [["session", this.session], ["heart-beat", `${this.hbOut},${this.hbIn}`], ["server", "vmc-broker/0.1"], ["version", version]], undefined, version),
    );
  }

  private txOr(f: Frame, run: () => void): void {
    const t = f.headers.get("transaction");
    if (t === undefined) return run();
    const frames = this.tx?.get(t);
    if (!frames) return this.error("Bad transaction", `Invalid transaction identifier: ${t}`);
    if (frames.length >= this.broker.limits.maxTransactionFrames) return this.error("Resource limit", `more than ${this.broker.limits.maxTransactionFrames} frames in a transaction`);
    frames.push(f);
    this.receipt(f);
  }

  private onTransaction(f: Frame): void {
    const t = f.headers.get("transaction");
    if (t === undefined) return this.error("Missing transaction", `${f.command} must include a 'transaction' header`);
    const tx = (this.tx ??= new Map());
    if (f.command === "BEGIN") {
      if (tx.has(t)) return this.error("Bad transaction", `Transaction ${t} already started`);
      if (tx.size >= this.broker.limits.maxTransactions) return this.error("Resource limit", `more than ${this.broker.limits.maxTransactions} open transactions`);
      tx.set(t, []);
      return this.receipt(f);
    }
    const frames = tx.get(t);
    if (!frames) return this.error("Bad transaction", `Invalid transaction identifier: ${t}`);
    tx.delete(t);
    if (f.command === "COMMIT") {
      for (const inner of frames) {
        if (this.state !== "open") return;
        if (inner.command === "SEND") this.onSend(inner, false);
        else this.onAck(inner, false);
      }
    }
    this.receipt(f);
  }

  private onSend(f: Frame, withReceipt = true): void {
    const dest = f.headers.get("destination");
    if (dest === undefined) return this.error("Missing destination", "SEND must include a 'destination' header");
    const d = parseDestination(dest);
    if (!d || d.kind === "temp") return this.error("Unknown destination", invalidDestination(dest));
    let replyTo = f.headers.get("reply-to");
    if (replyTo !== undefined && replyTo.startsWith("/temp-queue/")) {
      const q = this.tempQueue(replyTo);
      if (!q) return;
      replyTo = "/reply-queue/" + q.name;
    }
    const refused = this.broker.publish(this, dest, d, f, replyTo);
    if (refused) return this.error(refused[0], refused[1]);
    if (withReceipt) this.receipt(f);
  }

  /** RabbitMQ's /temp-queue/: one exclusive queue per name per connection, auto-subscribed. */
  private tempQueue(replyTo: string): Queue | undefined {
    const existing = this.tempQueues?.get(replyTo);
    if (existing) return existing;
    if (this.subs.size >= this.broker.limits.maxSubscriptions) {
      this.error("Resource limit", `more than ${this.broker.limits.maxSubscriptions} subscriptions`);
      return undefined;
    }
    const q = this.broker.exclusiveQueue(this, undefined);
    (this.tempQueues ??= new Map()).set(replyTo, q);
    const sub = new Subscription(this, replyTo, q, "auto", 0, true);
    this.subs.set(replyTo, sub);
    q.addConsumer(sub);
    return q;
  }

  private onSubscribe(f: Frame): void {
    const dest = f.headers.get("destination");
    if (dest === undefined) return this.error("Missing destination", "SUBSCRIBE must include a 'destination' header");
    const id = f.headers.get("id") ?? dest;
    if (this.subs.has(id)) return this.error("Duplicated subscription identifier", `A subscription identified by '${id}' already exists.`);
    if (this.subs.size >= this.broker.limits.maxSubscriptions) return this.error("Resource limit", `more than ${this.broker.limits.maxSubscriptions} subscriptions`);
    const ack = f.headers.get("ack") ?? "auto";
    if (ack !== "auto" && ack !== "client" && ack !== "client-individual") return this.error("Bad ack mode", `Invalid ack mode '${ack.slice(0, 40)}'`);
    const pf = f.headers.get("prefetch-count");
    if (pf !== undefined && !/^\d{1,9}$/.test(pf)) return this.error("Bad prefetch-count", `Invalid prefetch-count '${pf.slice(0, 40)}'`);
    const d = parseDestination(dest);
    if (!d || d.kind === "temp") return this.error("Unknown destination", invalidDestination(dest));
    const found = this.broker.subscribeQueue(this, d, f.headers);
    if (typeof found === "string") return this.error(errorKind(found), found);
    const sub = new Subscription(this, id, found.queue, ack, pf === undefined ? 0 : Number(pf), found.owned);
    this.subs.set(id, sub);
    this.receipt(f);
    found.queue.addConsumer(sub);
  }

  private onUnsubscribe(f: Frame): void {
    const id = f.headers.get("id") ?? f.headers.get("destination");
    if (id === undefined) return this.error("Missing destination", "UNSUBSCRIBE must include an 'id' header");
    const sub = this.subs.get(id);
    if (!sub) return this.error("No subscription found", `Subscription to '${id}' not found.`);
    this.dropSubscription(sub);
    // RabbitMQ: UNSUBSCRIBE with durable/persistent:true removes a durable subscription's queue.
    if (f.headers.get("durable") === "true" || f.headers.get("persistent") === "true") this.broker.deleteQueue(sub.queue);
    this.receipt(f);
  }

  private onAck(f: Frame, withReceipt = true): void {
    const raw = this.version === "1.2" ? (f.headers.get("id") ?? f.headers.get("message-id")) : (f.headers.get("message-id") ?? f.headers.get("id"));
    if (raw === undefined) return this.error("Missing header", `${f.command} must include ${this.version === "1.2" ? "an 'id'" : "a 'message-id'"} header`);
    const at = raw.lastIndexOf("@@");
    const tag = at >= 0 ? Number(raw.slice(at + 2)) : NaN;
    const sub = Number.isInteger(tag) ? this.tags.get(tag) : undefined;
    if (!sub) return this.error("PRECONDITION_FAILED", `unknown delivery tag '${raw.slice(0, 80)}'`);
    const done: StoredMessage[] = [];
    if (sub.ackMode === "client") {
      for (const [t, m] of sub.unacked) {
        if (t > tag) break;
        done.push(m);
        sub.unacked.delete(t);
        this.tags.delete(t);
      }
    } else {
      done.push(sub.unacked.get(tag)!);
      sub.unacked.delete(tag);
      this.tags.delete(tag);
    }
    if (f.command === "NACK" && f.headers.get("requeue") !== "false") sub.queue.requeue(done);
    else for (const m of done) this.broker.finish(m);
    sub.queue.dispatch();
    if (withReceipt) this.receipt(f);
  }

  /** Sends RECEIPT (after the journal is durable, when it has pending writes), then `then`. */
  private receipt(f: Frame, then?: () => void): void {
    const id = f.headers.get("receipt");
    if (id === undefined) {
      then?.();
      return;
    }
    this.broker.afterDurable(() => {
      this.write(serializeFrame("RECEIPT", [["receipt-id", id]], undefined, this.version));
      then?.();
    });
  }

  private dropSubscription(sub: Subscription): void {
    this.subs.delete(sub.id);
    const pending = [...sub.unacked.entries()];
    sub.unacked.clear();
    for (const [t] of pending) this.tags.delete(t);
    sub.queue.removeConsumer(sub);
    const msgs = pending.map(([, m]) => m);
    if (sub.ownsQueue) {
      for (const m of msgs) this.broker.finish(m);
      this.broker.deleteQueue(sub.queue);
    } else if (this.broker.queueAlive(sub.queue)) {
      if (msgs.length) sub.queue.requeue(msgs);
    } else for (const m of msgs) this.broker.finish(m);
  }

  /** ERROR (with `message` header and a text body), then close. */
  error(summary: string, detail: string, extra: Array<[string, string]> = []): void {
    if (this.state === "closing" || this.state === "closed") return;
    this.broker.stats.errors++;
    const headers: Array<[string, string]> = [["message", summary], ["content-type", "text/plain"], ...extra];
    const receipt = this.current?.headers.get("receipt");
    if (receipt !== undefined) headers.push(["receipt-id", receipt]);
    this.write(serializeFrame("ERROR", headers, Buffer.from(detail + "\n"), this.state === "connecting" ? "1.0" : this.version));
    this.close();
  }

  /** Graceful close: flush what was written, then FIN; destroyed if the peer does not read. */
  close(): void {
    if (this.state === "closing" || this.state === "closed") return;
    this.state = "closing";
    this.parser.stop();
    this.release();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private release(): void {
    this.broker.inputBytes -= this.buffered;
    this.buffered = 0;
    for (const sub of [...this.subs.values()]) this.dropSubscription(sub);
    for (const q of this.ownedQueues ?? []) this.broker.deleteQueue(q);
    this.ownedQueues = undefined;
    this.tx = undefined;
    this.tempQueues = undefined;
    this.broker.disconnected(this);
  }

  private cleanup(): void {
    if (this.state === "closed") return;
    if (this.state !== "closing") {
      this.parser.stop();
      this.release();
    }
    this.state = "closed";
    this.broker.gone(this);
  }
}

function invalidDestination(dest: string): string {
  return `'${dest.slice(0, 200)}' is not a valid destination.\nValid destination types are: /temp-queue, /exchange/amq.topic, /topic, /queue, /amq/queue, /reply-queue/.`;
}
