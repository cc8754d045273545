/**
 * The agents a controller knows, fed by presence messages (HELLO, HEARTBEAT, BYE).
 *
 * An agent is `online` from its HELLO (or first HEARTBEAT) until it says BYE or misses
 * `missedHeartbeats` heartbeat periods in a row; then `offline` (kept, with the reason, until
 * `forgetAfterMs`). Silence is only counted while the controller itself is connected: a
 * controller that lost the broker calls {@link AgentRegistry.suspend} and, back online,
 * {@link AgentRegistry.resume}, which gives every agent a fresh period to show up again.
 *
 * Presence comes from untrusted guests: every message is schema-checked, the number of agents
 * is capped, and one agent's message only ever changes that agent's entry.
 * @packageDocumentation
 */
import { Bye, Heartbeat, Hello, PresenceMessage } from "@vmc/protocol/bus";

export type AgentState = "online" | "offline";

/** What the controller knows about one agent. */
export interface AgentInfo {
  agentId: string;
  state: AgentState;
  labels: Record<string, string>;
  /** From HELLO; absent when the agent was first seen through a HEARTBEAT. */
  hello?: Hello;
  bootId: string;
  /** Heartbeat period the agent announced (or the registry default before its first HEARTBEAT). */
  heartbeatMs: number;
  /** Commands the agent said it was running in its last HEARTBEAT. */
  running: number;
  /** Controller clock (ms since epoch) of the first and the latest presence message. */
  firstSeenAt: number;
  lastSeenAt: number;
  /** Why it is offline (BYE reason, missed heartbeats). */
  offlineReason?: string;
  offlineSince?: number;
}

export type AgentChangeKind = "added" | "updated" | "online" | "offline" | "restarted" | "removed";

export interface AgentChange {
  kind: AgentChangeKind;
  agent: Readonly<AgentInfo>;
}

export interface RegistryOptions {
  /** Heartbeat period assumed when an agent has not announced its own (in HELLO or HEARTBEAT) (default 10 000 ms). */
  defaultHeartbeatMs?: number;
  /** Heartbeat periods of silence after which an agent is offline (default 3). */
  missedHeartbeats?: number;
  /** Offline agents are forgotten after this long (default 10 min). */
  forgetAfterMs?: number;
  /** Cap on agents held (default 100 000); presence from new agents beyond it is dropped. */
  maxAgents?: number;
  /** How often silence is checked (default 250 ms). */
  sweepMs?: number;
  /** Clock (tests). */
  now?: () => number;
  log?: (message: string) => void;
}

type Listener = (change: AgentChange) => void;

export class AgentRegistry {
  private readonly agents = new Map<string, AgentInfo>();
  private readonly listeners = new Set<Listener>();
  private readonly helloListeners = new Set<(agentId: string) => void>();
  private readonly defaultHeartbeatMs: number;
  private readonly missed: number;
  private readonly forgetAfterMs: number;
  private readonly maxAgents: number;
  private readonly now: () => number;
  private readonly log: (message: string) => void;
  private sweeper: NodeJS.Timeout | undefined;
  private suspended = false;
  private unknownHeartbeatListener: ((agentId: string) => void) | undefined;

  constructor(options: RegistryOptions = {}) {
    this.defaultHeartbeatMs = options.defaultHeartbeatMs ?? 10_000;
    this.missed = options.missedHeartbeats ?? 3;
    this.forgetAfterMs = options.forgetAfterMs ?? 10 * 60_000;
    this.maxAgents = options.maxAgents ?? 100_000;
    this.now = options.now ?? Date.now;
    this.log = options.log ?? (() => {});
    const sweepMs = options.sweepMs ?? 250;
    if (sweepMs > 0) {
      this.sweeper = setInterval(() => this.sweep(), sweepMs);
      this.sweeper.unref();
    }
  }

  /** Every agent known (online and recently offline), sorted by id. */
  list(): AgentInfo[] {
    return [...this.agents.values()].sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
  }

  online(): AgentInfo[] {
    return this.list().filter((a) => a.state === "online");
  }

  get(agentId: string): AgentInfo | undefined {
    return this.agents.get(agentId);
  }

  get size(): number {
    return this.agents.size;
  }

  /** Calls `listener` on every change; returns the function that removes it. */
  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Calls `listener` for every valid HELLO (used by discovery to find the quiet period). */
  onHello(listener: (agentId: string) => void): () => void {
    this.helloListeners.add(listener);
    return () => this.helloListeners.delete(listener);
  }

  /** Called when a HEARTBEAT comes from an agent with no HELLO on record (the fleet then asks for HELLOs). */
  set onUnknownHeartbeat(listener: ((agentId: string) => void) | undefined) {
    this.unknownHeartbeatListener = listener;
  }

  /** Feeds one presence message (any JSON value; invalid ones are logged and dropped). */
  handle(raw: unknown): void {
    const parsed = PresenceMessage.safeParse(raw);
    if (!parsed.success) {
      this.log(`presence message dropped: ${parsed.error.issues[0]?.message ?? "invalid"}`);
      return;
    }
    const message = parsed.data;
    switch (message.type) {
      case "HELLO":
        return this.hello(message);
      case "HEARTBEAT":
        return this.heartbeat(message);
      case "BYE":
        return this.bye(message);
    }
  }

  /** The controller lost the broker: stop counting silence. */
  suspend(): void {
    this.suspended = true;
  }

  /** The controller is back: every online agent gets a fresh period from now. */
  resume(): void {
    const now = this.now();
    for (const agent of this.agents.values()) if (agent.state === "online") agent.lastSeenAt = now;
    this.suspended = false;
  }

  /** Marks agents that have been silent too long offline, forgets long-gone ones. */
  sweep(): void {
    if (this.suspended) return;
    const now = this.now();
    for (const agent of [...this.agents.values()]) {
      if (agent.state === "online") {
        const silentMs = now - agent.lastSeenAt;
        if (silentMs > agent.heartbeatMs * this.missed) {
          this.goOffline(agent, `no heartbeat for ${Math.round(silentMs)} ms (period ${agent.heartbeatMs} ms)`, now);
        }
      } else if (now - (agent.offlineSince ?? agent.lastSeenAt) > this.forgetAfterMs) {
        this.agents.delete(agent.agentId);
        this.emit("removed", agent);
      }
    }
  }

  dispose(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.listeners.clear();
    this.helloListeners.clear();
  }

  private hello(message: Hello): void {
    const now = this.now();
    const existing = this.agents.get(message.agentId);
    if (!existing) {
      if (!this.admit(message.agentId)) return;
      const agent: AgentInfo = {
        agentId: message.agentId,
        state: "online",
        labels: { ...message.labels },
        hello: message,
        bootId: message.bootId,
        heartbeatMs: message.heartbeatMs ?? this.defaultHeartbeatMs,
        running: 0,
        firstSeenAt: now,
        lastSeenAt: now,
      };
      this.agents.set(agent.agentId, agent);
      this.emit("added", agent);
    } else {
      const restarted = existing.bootId !== message.bootId;
      const wasOffline = existing.state === "offline";
      const changed = restarted || wasOffline || JSON.stringify(existing.labels) !== JSON.stringify(message.labels) || !existing.hello;
      existing.labels = { ...message.labels };
      existing.hello = message;
      existing.bootId = message.bootId;
      existing.lastSeenAt = now;
      if (message.heartbeatMs) existing.heartbeatMs = message.heartbeatMs;
      if (restarted) existing.running = 0;
      this.markOnline(existing);
      if (restarted) this.emit("restarted", existing);
      if (wasOffline) this.emit("online", existing);
      if (changed && !restarted && !wasOffline) this.emit("updated", existing);
    }
    for (const listener of this.helloListeners) listener(message.agentId);
  }

  private heartbeat(message: Heartbeat): void {
    const now = this.now();
    const existing = this.agents.get(message.agentId);
    if (!existing) {
      if (!this.admit(message.agentId)) return;
      const agent: AgentInfo = {
        agentId: message.agentId,
        state: "online",
        labels: {},
        bootId: message.bootId,
        heartbeatMs: message.intervalMs,
        running: message.running,
        firstSeenAt: now,
        lastSeenAt: now,
      };
      this.agents.set(agent.agentId, agent);
      this.emit("added", agent);
      this.unknownHeartbeatListener?.(message.agentId);
      return;
    }
    const restarted = existing.bootId !== message.bootId;
    const wasOffline = existing.state === "offline";
    existing.bootId = message.bootId;
    existing.heartbeatMs = message.intervalMs;
    existing.running = message.running;
    existing.lastSeenAt = now;
    this.markOnline(existing);
    if (restarted) {
      this.emit("restarted", existing);
      this.unknownHeartbeatListener?.(message.agentId);
    }
    if (wasOffline) this.emit("online", existing);
  }

  private bye(message: Bye): void {
    const existing = this.agents.get(message.agentId);
    if (!existing || existing.bootId !== message.bootId || existing.state === "offline") return;
    existing.lastSeenAt = this.now();
    this.goOffline(existing, `said BYE${message.reason ? `: ${message.reason}` : ""}`, existing.lastSeenAt);
  }

  private admit(agentId: string): boolean {
    if (this.agents.size < this.maxAgents) return true;
    this.log(`presence from ${agentId} dropped: registry holds its cap of ${this.maxAgents} agents`);
    return false;
  }

  private markOnline(agent: AgentInfo): void {
    agent.state = "online";
    delete agent.offlineReason;
    delete agent.offlineSince;
  }

  private goOffline(agent: AgentInfo, reason: string, now: number): void {
    agent.state = "offline";
    agent.offlineReason = reason;
    agent.offlineSince = now;
    this.emit("offline", agent);
  }

  private emit(kind: AgentChangeKind, agent: AgentInfo): void {
    for (const listener of this.listeners) {
      try {
        listener({ kind, agent });
      } catch (e) {
        this.log(`registry listener failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
}
