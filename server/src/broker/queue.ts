/**
 * A queue: a FIFO of messages with competing consumers served round-robin, each limited by its
 * prefetch credit and by its connection's write backpressure. Topic subscriptions are queues too
 * (exclusive, bound to a routing pattern), as in RabbitMQ.
 */
import type { StoredMessage } from "./message";

export interface QueueArgs {
  durable: boolean;
  autoDelete: boolean;
  /** `x-message-ttl`, ms; 0 = none. */
  messageTtl: number;
  /** `x-expires`, ms without consumers before the queue is deleted; 0 = never. */
  expires: number;
  /** `x-max-length`; 0 = unlimited (oldest messages dropped beyond it, RabbitMQ's drop-head). */
  maxLength: number;
}

/** What a queue needs from a consumer; implemented by the connection's subscription. */
export interface Consumer {
  /** True when it may receive one more message now. */
  hasCredit(): boolean;
  deliver(m: StoredMessage): void;
}

export interface QueueOwner {
  /** A message left the broker without being delivered (expired or dropped). */
  discard(q: Queue, m: StoredMessage): void;
  /** The queue is unused and should be deleted (auto-delete). */
  unused(q: Queue): void;
}

export class Queue {
  private items: StoredMessage[] = [];
  private head = 0;
  readonly consumers: Consumer[] = [];
  private next = 0;
  private dispatching = false;
  /** Epoch ms of the last consumer activity, for `x-expires`. */
  lastUsed = Date.now();
  hadConsumer = false;

  constructor(
    readonly name: string,
    readonly args: QueueArgs,
    private readonly owner: QueueOwner,
    /** Connection id for exclusive queues (topic subscriptions, temp queues). */
    readonly exclusiveTo: number | undefined = undefined,
  ) {}

  get size(): number {
    return this.items.length - this.head;
  }

  /** Messages still queued, oldest first (for journal compaction and tests). */
  *messages(): Iterable<StoredMessage> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i]!;
  }

  enqueue(m: StoredMessage): void {
    if (this.args.messageTtl > 0) {
      const e = Date.now() + this.args.messageTtl;
      if (m.expiresAt === 0 || e < m.expiresAt) m.expiresAt = e;
    }
    this.items.push(m);
    if (this.args.maxLength > 0) while (this.size > this.args.maxLength) this.owner.discard(this, this.shift()!);
    this.dispatch();
  }

  /** Puts messages back at the head, in the order given, marked redelivered. */
  requeue(ms: StoredMessage[]): void {
    for (let i = ms.length - 1; i >= 0; i--) {
      const m = ms[i]!;
      m.redelivered = true;
      if (this.head > 0) this.items[--this.head] = m;
      else this.items.unshift(m);
    }
    this.dispatch();
  }

  addConsumer(c: Consumer): void {
    this.consumers.push(c);
    this.hadConsumer = true;
    this.lastUsed = Date.now();
    this.dispatch();
  }

  removeConsumer(c: Consumer): void {
    const i = this.consumers.indexOf(c);
    if (i >= 0) this.consumers.splice(i, 1);
    this.lastUsed = Date.now();
    if (this.consumers.length === 0 && this.args.autoDelete && this.hadConsumer) this.owner.unused(this);
  }

  /** Hands queued messages to consumers with credit, round-robin. */
  dispatch(): void {
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      const now = this.size > 0 ? Date.now() : 0;
      while (this.size > 0 && this.consumers.length > 0) {
        const n = this.consumers.length;
        let chosen: Consumer | undefined;
        for (let k = 0; k < n; k++) {
          const idx = (this.next + k) % n;
          const c = this.consumers[idx]!;
          if (c.hasCredit()) {
            chosen = c;
            this.next = (idx + 1) % n;
            break;
          }
        }
        if (!chosen) break;
        const m = this.shift()!;
        if (m.expiresAt !== 0 && m.expiresAt <= now) {
          this.owner.discard(this, m);
          continue;
        }
        chosen.deliver(m);
      }
    } finally {
      this.dispatching = false;
    }
  }

  /** Drops expired messages from the head (RabbitMQ expires from the head too). */
  expireHead(now: number): void {
    while (this.size > 0) {
      const m = this.items[this.head]!;
      if (m.expiresAt === 0 || m.expiresAt > now) break;
      this.owner.discard(this, this.shift()!);
    }
  }

  /** Removes and returns every queued message (queue deletion). */
  drain(): StoredMessage[] {
    const out = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return out;
  }

  private shift(): StoredMessage | undefined {
    if (this.head >= this.items.length) return undefined;
    const m = this.items[this.head]!;
    (this.items as Array<StoredMessage | undefined>)[this.head] = undefined;
    this.head++;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return m;
  }
}
