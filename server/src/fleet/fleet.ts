/**
 * The controller's view of the fleet over one bus connection: the agent registry (presence and
 * DISCOVER), and commands fanned out to targets with every target accounted for.
 *
 * ```ts
 * const fleet = await Fleet.open({ bus, keys });
 * await fleet.discover();
 * const run = await fleet.run({ target: "vm.1.2.*", argv: ["uname", "-a"] }, { onOutput, onTargetDone });
 * const report = await run.done;   // one TargetOutcome per target
 * await fleet.close();
 * ```
 * Replies come to this instance's own `/topic/vmc.controller.<instanceId>`, read through a
 * durable subscription that the broker deletes `replyExpiresMs` after the controller is gone.
 * @packageDocumentation
 */
import { randomBytes } from "node:crypto";
import { ControllerInboxMessage, Destinations, type CmdCancel, type CmdOutput, type CmdResult, type Discover } from "@vmc/protocol/bus";
import { signMessage } from "@vmc/protocol/signing";
import type { BusClient, BusMessage, BusSubscription } from "../bus/client";
import type { ControllerKeys } from "../store/keys";
import { CommandRun, DEFAULT_TIMINGS, type RunEvents, type RunRequest, type RunTimings } from "./command";
import { AgentRegistry, type AgentChange, type AgentInfo, type RegistryOptions } from "./registry";
import { expandTarget, literalIds, needsDiscovery, parseTarget, type Target } from "./target";

export interface DiscoveryOptions {
  /** Discovery ends when no HELLO has arrived for this long (default 200 ms). */
  quietMs?: number;
  /** ... or, when no agent answers at all, after this long (default 1000 ms). */
  firstAnswerMs?: number;
  /** Hard bound (default 5000 ms). */
  maxMs?: number;
}

export interface FleetOptions {
  /** A bus client (started); the fleet does not close it. */
  bus: BusClient;
  keys: Pick<ControllerKeys, "privateKey">;
  /** Names this controller's reply destination; default random. */
  instanceId?: string;
  /** The reply subscription's queue is deleted this long after the controller is gone (default 120 000 ms). */
  replyExpiresMs?: number;
  registry?: RegistryOptions;
  discovery?: DiscoveryOptions;
  timings?: Partial<RunTimings>;
  log?: (message: string) => void;
}

export interface FleetRunOptions {
  /** Ask agents to announce themselves before expanding a pattern, even if discovery already ran. */
  rediscover?: boolean;
}

/**
 * Handles a reply for a command this process did not send (one sent by an earlier controller
 * with the same instanceId, see store/controller-lease.ts). Return a promise to delay the ack.
 */
export type OrphanReplyHandler = (message: CmdOutput | CmdResult) => void | Promise<void>;

export class Fleet {
  readonly instanceId: string;
  private orphanHandler: OrphanReplyHandler | undefined;
  /**
   * With a given instanceId (a leased identity), replies for unknown commands that arrive before
   * a handler is set are held unacknowledged (the subscription's prefetch bounds them) and handed
   * to the first handler: a restarted controller must not ack away its predecessor's results.
   */
  private orphanBacklog: Array<{ message: CmdOutput | CmdResult; raw: BusMessage }> | undefined;
  readonly replyTo: string;
  readonly registry: AgentRegistry;
  private readonly bus: BusClient;
  private readonly keys: Pick<ControllerKeys, "privateKey">;
  private readonly log: (message: string) => void;
  private readonly discovery: Required<DiscoveryOptions>;
  private readonly timings: RunTimings;
  private readonly runsByCmd = new Map<string, CommandRun>();
  private readonly runs = new Set<CommandRun>();
  private readonly subscriptions: BusSubscription[] = [];
  private readonly disposers: Array<() => void> = [];
  private discovered: Promise<AgentInfo[]> | undefined;
  private lastDiscoverAt = 0;

  private constructor(options: FleetOptions) {
    this.bus = options.bus;
    this.keys = options.keys;
    if (options.instanceId !== undefined) this.orphanBacklog = [];
    this.instanceId = options.instanceId ?? `c${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`;
    this.replyTo = Destinations.controllerReplies(this.instanceId);
    this.log = options.log ?? ((m) => process.stderr.write(`fleet: ${m}\n`));
    this.registry = new AgentRegistry({ log: this.log, ...options.registry });
    this.discovery = { quietMs: 200, firstAnswerMs: 1000, maxMs: 5000, ...options.discovery };
    this.timings = { ...DEFAULT_TIMINGS, ...options.timings };
  }

  /** Subscribes to presence and to this instance's replies, and waits until the broker confirmed both. */
  static async open(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    await fleet.attach(options.replyExpiresMs ?? 120_000);
    return fleet;
  }

  private async attach(replyExpiresMs: number): Promise<void> {
    const presence = this.bus.subscribe(Destinations.presence, (m) => {
      let raw: unknown;
      try {
        raw = JSON.parse(m.body);
      } catch {
        return this.log(`presence message dropped: not JSON`);
      }
      this.registry.handle(raw);
    });
    const replies = this.bus.subscribeJson(Destinations.controllerReplies(this.instanceId), ControllerInboxMessage, (m, raw) => this.onReply(m, raw), {
      ack: "client-individual",
      prefetch: 64,
      durable: true,
      autoDelete: false,
      expiresMs: replyExpiresMs,
      maxBodyBytes: 40 * 1024 * 1024,
    });
    this.subscriptions.push(presence, replies);
    this.registry.onUnknownHeartbeat = () => this.requestHellos();
    this.disposers.push(this.registry.onChange((c) => this.onAgentChange(c)));
    let wasConnected = this.bus.connected;
    this.disposers.push(
      this.bus.onState((state) => {
        if (state === "connected") {
          if (!wasConnected) return void (wasConnected = true);
          this.registry.resume();
          this.requestHellos(true);
        } else if (state === "disconnected" || state === "reconnecting") this.registry.suspend();
      }),
    );
    await Promise.all([presence.ready, replies.ready]);
  }

  /** Agents known now (online and recently offline), sorted by id. */
  agents(): AgentInfo[] {
    return this.registry.list();
  }

  /**
   * Publishes DISCOVER and collects HELLOs until none has come for `quietMs` (or none at all
   * within `firstAnswerMs`), bounded by `maxMs`. Resolves with the agents known then.
   */
  discover(options: DiscoveryOptions = {}): Promise<AgentInfo[]> {
    const { quietMs, firstAnswerMs, maxMs } = { ...this.discovery, ...options };
    const round = new Promise<AgentInfo[]>((resolve) => {
      const started = Date.now();
      let quiet: NodeJS.Timeout;
      const finish = () => {
        clearTimeout(quiet);
        clearTimeout(bound);
        stop();
        resolve(this.registry.list());
      };
      const stop = this.registry.onHello(() => {
        clearTimeout(quiet);
        quiet = setTimeout(finish, Math.min(quietMs, Math.max(0, maxMs - (Date.now() - started))));
      });
      quiet = setTimeout(finish, firstAnswerMs);
      const bound = setTimeout(finish, maxMs);
      this.publishDiscover().catch((e: unknown) => {
        this.log(`DISCOVER not sent: ${e instanceof Error ? e.message : String(e)}`);
        finish();
      });
    });
    this.discovered = round;
    return round;
  }

  /**
   * Expands `request.target` against the registry (discovering first when the target has a
   * pattern or a label and no discovery has run yet), then signs and sends every target its own
   * CMD_RUN. Resolves once everything is sent; `run.done` resolves when every target has ended.
   * Throws {@link TargetSyntaxError} for a malformed target.
   */
  async run(request: RunRequest, events: RunEvents = {}, options: FleetRunOptions = {}): Promise<CommandRun> {
    const target = parseTarget(request.target);
    if (needsDiscovery(target)) {
      if (options.rediscover || !this.discovered) await this.discover();
      else await this.discovered;
    } else {
      // Literal ids only: send at once, and ask just those agents we do not know to be online to
      // say hello, so an online agent is told apart from one whose inbox must hold the command.
      const unsure = literalIds(target).filter((id) => this.registry.get(id)?.state !== "online");
      if (unsure.length) this.publishDiscover(unsure.slice(0, 1024)).catch(() => undefined);
    }
    return this.send(target, request, events);
  }

  /** Like {@link run}, for an already parsed target and without discovery. */
  async send(target: Target, request: RunRequest, events: RunEvents = {}): Promise<CommandRun> {
    const { agentIds } = expandTarget(target, this.registry.list());
    const run = new CommandRun({ ...request, target: target.source }, agentIds, this.context(), events);
    for (const cmdId of run.cmdIds) this.runsByCmd.set(cmdId, run);
    this.runs.add(run);
    await run.start();
    return run;
  }

  /** Sends a signed CMD_CANCEL for a command this process may not have sent (its result goes to the command's replyTo). */
  sendCancel(agentId: string, cmdId: string): Promise<void> {
    const message: CmdCancel = signMessage({ type: "CMD_CANCEL" as const, cmdId, agentId, issuedAt: Date.now() }, this.keys.privateKey);
    return this.bus.publishJson(Destinations.agentInbox(agentId), message, { headers: { persistent: "true", expiration: "30000" } });
  }

  /** Cancels every run in progress (CMD_CANCEL to each target still running). */
  cancelAll(): void {
    for (const run of this.runs) run.cancel();
  }

  /** Unsubscribes and stops the registry; runs in progress are left to the caller. */
  async close(): Promise<void> {
    for (const dispose of this.disposers.splice(0)) dispose();
    for (const s of this.subscriptions.splice(0)) s.unsubscribe();
    this.registry.dispose();
  }

  private context() {
    return {
      replyTo: this.replyTo,
      timings: this.timings,
      now: Date.now,
      sign: <T extends object>(message: T) => signMessage(message, this.keys.privateKey),
      isOnline: (agentId: string) => this.registry.get(agentId)?.state === "online",
      describeAway: (agentId: string) => {
        const agent = this.registry.get(agentId);
        if (!agent) return `agent ${agentId} is not known to this controller (no presence seen)`;
        return `agent ${agentId} is offline since ${new Date(agent.offlineSince ?? agent.lastSeenAt).toISOString()} (${agent.offlineReason ?? "unknown reason"})`;
      },
      send: (agentId: string, message: object, expiresInMs: number) =>
        this.bus.publishJson(Destinations.agentInbox(agentId), message, {
          headers: { persistent: "true", expiration: String(Math.max(1, Math.round(expiresInMs))) },
        }),
      finished: (run: CommandRun) => {
        for (const cmdId of run.cmdIds) this.runsByCmd.delete(cmdId);
        this.runs.delete(run);
      },
    };
  }

  private onReply(message: CmdOutput | CmdResult, raw: BusMessage): void {
    const run = this.runsByCmd.get(message.cmdId);
    if (!run) {
      if (this.orphanBacklog && !this.orphanHandler) return void this.orphanBacklog.push({ message, raw });
      return this.deliverOrphan(message, raw);
    }
    const expected = run.agentFor(message.cmdId);
    if (expected !== message.agentId) {
      this.log(`dropped ${message.type} for ${message.cmdId}: it claims agent ${message.agentId}, the command went to ${expected}`);
      return raw.ack();
    }
    const wait = message.type === "CMD_OUTPUT" ? run.handleOutput(message) : run.handleResult(message);
    if (wait) wait.then(() => raw.ack(), () => raw.ack());
    else raw.ack();
  }

  /** Replies for commands not sent by this process go here; without a handler they are dropped. */
  get orphanReplies(): OrphanReplyHandler | undefined {
    return this.orphanHandler;
  }

  set orphanReplies(handler: OrphanReplyHandler | undefined) {
    this.orphanHandler = handler;
    const held = handler ? this.orphanBacklog : undefined;
    if (!held) return;
    this.orphanBacklog = undefined;
    for (const { message, raw } of held) this.deliverOrphan(message, raw);
  }

  /** An old or foreign command: only a history that knows it waits for it. */
  private deliverOrphan(message: CmdOutput | CmdResult, raw: BusMessage): void {
    let wait: void | Promise<void> = undefined;
    try {
      wait = this.orphanHandler?.(message);
    } catch (e) {
      this.log(`reply for ${message.cmdId} not handled: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (wait) wait.then(() => raw.ack(), () => raw.ack());
    else raw.ack();
  }

  private onAgentChange(change: AgentChange): void {
    if (this.runs.size === 0) return;
    const kind = change.kind === "offline" ? "offline" : change.kind === "removed" ? undefined : change.agent.state === "online" ? "online" : undefined;
    if (!kind) return;
    for (const run of this.runs) run.agentChanged(change.agent.agentId, kind, change.agent.offlineReason);
  }

  /** DISCOVER on demand (an unknown agent's heartbeat, a reconnect), at most once a second. */
  private requestHellos(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastDiscoverAt < 1000) return;
    this.publishDiscover().catch(() => undefined);
  }

  private publishDiscover(agentIds?: string[]): Promise<void> {
    if (!agentIds) this.lastDiscoverAt = Date.now();
    const message: Discover = { type: "DISCOVER", controllerId: this.instanceId, ...(agentIds ? { agentIds } : {}) };
    return this.bus.publishJson(Destinations.discover, message);
  }
}
