/**
 * One guest agent: presence on the bus, a durable inbox, signed commands run exactly once.
 * Many agents may live in one process (`startAgent` per agent), which is how benchmarks
 * simulate a fleet.
 */
import { randomBytes, type KeyObject } from "node:crypto";
import { arch, hostname, platform, release } from "node:os";
import {
  BUS_PROTOCOL_VERSION,
  CmdCancel,
  CmdId,
  CmdInput,
  CmdRun,
  Destinations,
  Discover,
  type CmdResult,
  type Hello,
} from "@vmc/protocol/bus";
import { publicKeyFromBase64, verifyMessage } from "@vmc/protocol/signing";
import { BusClient, type BusLogger, type BusMessage, type BusSubscription } from "@vmc/server/bus/client";
import { failedResult, RunningCommand } from "./executor";
import { CmdJournal } from "./journal";
import { OutputWindow } from "./output-window";
import { processStartTime, WrapperPool } from "./wrapper-pool";
import type { AgentPlugin, AgentPluginInstance } from "./plugin";
import { AGENT_VERSION } from "./version";

export interface AgentOptions {
  /** Dotted agent id (`vm.1.2.7`). */
  id: string;
  /** Default: `$VMC_BROKER`, else the embedded broker's default address. */
  brokerUrl?: string;
  labels?: Record<string, string>;
  /** The controller's Ed25519 public key (base64 raw, 44 characters) or a KeyObject. */
  controllerKey: string | KeyObject;
  /** Where the cmd-id journal lives (one dir per agent id). */
  stateDir: string;
  /** Period of presence HEARTBEAT messages, ms (default 10000). */
  heartbeatIntervalMs?: number;
  /**
   * Broker → agent STOMP heartbeat asked for, ms (default 1000). The link is declared dead after
   * 3 silent periods (~3 s): shorter thresholds tore down healthy links on a loaded host, and a
   * snapshot restore is caught sooner by the clock-jump check and the VM driver's RESTORED line.
   */
  busHeartbeatMs?: number;
  /**
   * Agent → broker STOMP heartbeat, ms (default 1000). Lets the broker drop the agent's OLD
   * session after a snapshot restore (that session's socket is silently dead on the guest side,
   * but still open on the broker's side, holding unacknowledged commands); the broker then
   * redelivers them to the new session, where the journal keeps them exactly-once.
   * RabbitMQ 3.10 is known to mishandle client heartbeats under heavy load; 0 turns them off.
   */
  busHeartbeatOutgoingMs?: number;
  /** Reconnect when the wall clock jumps by more than this against the monotonic clock, ms (default 1000; 0: off). */
  clockJumpMs?: number;
  /** Share an existing connection (not closed by `stop`). Default: the agent opens its own. */
  bus?: BusClient;
  plugins?: AgentPlugin[];
  /** Inbox messages larger than this are dropped (default 32 MiB). */
  maxInboxBytes?: number;
  log?: BusLogger;
}

export interface AgentHandle {
  readonly agentId: string;
  /** Random per start; changes when the agent restarts. */
  readonly bootId: string;
  readonly bus: BusClient;
  /** Commands running now. */
  running(): number;
  /** Resolves once the next command's wrapper is spawned ahead (after the first HELLO; see wrapper-pool.ts). */
  warm(): Promise<void>;
  /** Drop the broker connection and reconnect at once. */
  reconnectNow(reason: string): void;
  /**
   * The VM was restored from a snapshot at `hostTimeMs` (host clock): reconnect at once, and from
   * now on refuse commands issued before that instant that the journal does not know. The restore
   * rolled the journal back, so such a command may already have run in the discarded timeline
   * (a broker redelivers what the old connection left unacked); running it again is not exactly once.
   */
  restored(hostTimeMs: number): void;
  /** Cancels running commands (waiting ≤3 s for their results), says BYE, stops plugins, closes the bus. */
  stop(reason?: string): Promise<void>;
}

const SANE_REPLY_TO = /^\/(topic|queue|temp-queue|reply-queue|exchange|amq\/queue)\/[^\x00-\x1f\x7f]{1,480}$/;
const COMMAND_TYPES = new Set(["CMD_RUN", "CMD_INPUT", "CMD_CANCEL"]);

function stderrLog(id: string): BusLogger {
  return (level, message) => {
    // VMC_AGENT_TRACE (kernel word vmc_agent_trace=1) shows the debug steps too, with Node's uptime.
    if (level !== "debug") process.stderr.write(`vmc agent ${id} ${level}: ${message}\n`);
    else if (process.env.VMC_AGENT_TRACE) process.stderr.write(`vmc agent ${id} debug at ${process.uptime().toFixed(3)} s: ${message}\n`);
  };
}

/** Starts an agent; resolves once its plugins are started (the bus connects in the background). */
export async function startAgent(options: AgentOptions): Promise<AgentHandle> {
  const agent = new Agent(options);
  await agent.start();
  return agent;
}

class Agent implements AgentHandle {
  readonly agentId: string;
  readonly bootId = randomBytes(8).toString("hex");
  readonly bus: BusClient;
  private readonly ownBus: boolean;
  private readonly log: BusLogger;
  private readonly key: KeyObject;
  private readonly journal: CmdJournal;
  private readonly commands = new Map<string, RunningCommand>();
  private readonly wrappers = new WrapperPool();
  private readonly delivering = new Map<string, Promise<void>>();
  private readonly subscriptions: BusSubscription[] = [];
  private plugins: AgentPluginInstance[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  /** Host time of the last snapshot restore; commands issued before it are not run (see `restored`). */
  private restoredAt = 0;
  private offState: (() => void) | undefined;
  private stopped = false;

  constructor(private readonly options: AgentOptions) {
    this.agentId = options.id;
    this.log = options.log ?? stderrLog(options.id);
    this.key = typeof options.controllerKey === "string" ? publicKeyFromBase64(options.controllerKey) : options.controllerKey;
    this.journal = new CmdJournal(options.stateDir);
    this.ownBus = !options.bus;
    this.bus =
      options.bus ??
      new BusClient({
        brokerUrl: options.brokerUrl,
        name: `agent ${options.id}`,
        heartbeatIncomingMs: options.busHeartbeatMs ?? 1000,
        heartbeatTolerance: 3,
        heartbeatOutgoingMs: options.busHeartbeatOutgoingMs ?? 1000,
        clockJumpMs: options.clockJumpMs ?? 1000,
        reconnectMaxDelayMs: 5_000,
        log: this.log,
      });
  }

  async start(): Promise<void> {
    for (const entry of this.journal.lostOnOpen) {
      killOrphan(entry.pid, entry.pidStart);
      void this.journal.finish(entry.cmdId, failedResult(this.agentId, entry.cmdId, "lost", "the agent stopped while the command ran; it was not run again"));
    }
    for (const plugin of this.options.plugins ?? []) {
      try {
        this.plugins.push(await plugin.start({ agentId: this.agentId, bus: this.bus, controllerKey: this.key, stateDir: this.options.stateDir, log: this.log }));
      } catch (e) {
        // Commands matter more than any plugin: run without it (HELLO will not announce its capabilities).
        this.log("error", `plugin ${plugin.name} did not start: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.subscriptions.push(
      this.bus.subscribe(Destinations.agentInbox(this.agentId), (m) => this.onInbox(m), { ack: "client-individual", prefetch: 256 }),
      this.bus.subscribeJson(Destinations.discover, Discover, () => this.hello()),
    );
    this.offState = this.bus.onState((state) => {
      if (state === "connected") this.onConnected();
    });
    const interval = this.options.heartbeatIntervalMs ?? 10_000;
    this.heartbeat = setInterval(() => {
      if (this.bus.connected) {
        this.publishPresence({
          type: "HEARTBEAT",
          agentId: this.agentId,
          bootId: this.bootId,
          intervalMs: interval,
          running: this.commands.size,
          sentAt: Date.now(),
        });
      }
    }, interval);
    this.heartbeat.unref();
    this.log("debug", "plugins started, connecting");
    if (this.bus.connected) this.onConnected();
    this.bus.start();
  }

  running(): number {
    return this.commands.size;
  }

  warm(): Promise<void> {
    return this.wrappers.filled;
  }

  reconnectNow(reason: string): void {
    this.bus.reconnectNow(reason);
  }

  restored(hostTimeMs: number): void {
    this.restoredAt = Math.max(this.restoredAt, hostTimeMs);
    this.bus.reconnectNow("the VM was restored from a snapshot");
  }

  async stop(reason = "stopping"): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.heartbeat);
    this.offState?.();
    for (const s of this.subscriptions) s.unsubscribe();
    const finishing = [...this.commands.values()].map((c) => c.done);
    for (const c of this.commands.values()) c.cancel();
    this.wrappers.close();
    await Promise.race([Promise.allSettled(finishing), delay(3_000)]);
    await Promise.race([Promise.allSettled(this.delivering.values()), delay(2_000)]);
    if (this.bus.connected) {
      await this.bus.publishJson(Destinations.presence, { type: "BYE", agentId: this.agentId, bootId: this.bootId, reason }, { receipt: true, timeoutMs: 2_000 }).catch(() => undefined);
    }
    for (const p of this.plugins) await p.stop?.().catch((e: unknown) => this.log("warn", `plugin stop: ${String(e)}`));
    if (this.ownBus) await this.bus.close();
    await this.journal.close();
  }

  private onConnected(): void {
    if (this.stopped) return;
    this.hello();
    // After the HELLO: a machine just started announces itself first.
    this.wrappers.replenish();
    for (const entry of this.journal.undelivered()) if (entry.result) void this.deliver(entry.replyTo, entry.result);
  }

  private hello(): void {
    if (this.stopped) return;
    const capabilities = { exec: true, stdinStream: true, transfer: false };
    let dataEndpoint: Hello["dataEndpoint"];
    for (const p of this.plugins) {
      Object.assign(capabilities, p.capabilities);
      dataEndpoint ??= p.dataEndpoint;
    }
    const hello: Hello = {
      type: "HELLO",
      agentId: this.agentId,
      labels: this.options.labels ?? {},
      os: { platform: platform(), release: release(), arch: arch(), hostname: hostname().slice(0, 255) },
      agentVersion: AGENT_VERSION,
      protocolVersion: BUS_PROTOCOL_VERSION,
      capabilities,
      bootId: this.bootId,
      heartbeatMs: this.options.heartbeatIntervalMs ?? 10_000,
      sentAt: Date.now(),
    };
    if (dataEndpoint) hello.dataEndpoint = dataEndpoint;
    this.publishPresence(hello);
    this.log("debug", "HELLO sent");
  }

  private publishPresence(message: object): void {
    this.bus.publishJson(Destinations.presence, message, { timeoutMs: 5_000 }).catch((e: unknown) => this.log("debug", `presence: ${String(e)}`));
  }

  private async onInbox(m: BusMessage): Promise<void> {
    try {
      await this.route(m);
    } catch (e) {
      this.log("error", `inbox message failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    // Every path acks (CMD_RUN acks earlier, once journalled; a message settles only once).
    m.ack();
  }

  private async route(m: BusMessage): Promise<void> {
    const max = this.options.maxInboxBytes ?? 32 * 1024 * 1024;
    if (m.binaryBody.byteLength > max) return this.log("warn", `dropped an inbox message of ${m.binaryBody.byteLength} bytes (limit ${max})`);
    if (m.headers["vmc-type"] !== undefined) {
      for (const p of this.plugins) if (p.onInboxBinary && (await p.onInboxBinary(m))) return;
    }
    let json: unknown;
    try {
      json = JSON.parse(m.body);
    } catch {
      return this.log("warn", "dropped an inbox message that is not JSON");
    }
    const type = typeof json === "object" && json !== null ? (json as { type?: unknown }).type : undefined;
    if (typeof type !== "string") return this.log("warn", "dropped an inbox message without a string `type`");
    if (!COMMAND_TYPES.has(type)) {
      for (const p of this.plugins) if (p.onInboxJson && (await p.onInboxJson(type, json, m))) return;
      return this.log("warn", `dropped an inbox message of unknown type ${JSON.stringify(type.slice(0, 64))}`);
    }
    if (type === "CMD_RUN") return this.onRun(json, m);
    if (type === "CMD_INPUT") return this.onInput(json);
    return this.onCancel(json);
  }

  private async onRun(json: unknown, m: BusMessage): Promise<void> {
    const parsed = CmdRun.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return this.reject(json, `invalid CMD_RUN: ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "schema mismatch"}`);
    }
    const cmd = parsed.data;
    if (!SANE_REPLY_TO.test(cmd.replyTo)) return this.log("warn", `dropped CMD_RUN ${cmd.cmdId}: unusable replyTo`);
    if (cmd.agentId !== this.agentId) return this.reject(json, `addressed to agent ${cmd.agentId}, this is ${this.agentId}`);
    // Verify what was sent, not the parsed copy: defaults filled in by the schema would change the signed bytes.
    if (!verifyMessage(json as object, this.key)) return this.reject(json, "bad or missing signature: not signed by this agent's controller key");
    const known = this.journal.get(cmd.cmdId);
    if (known) {
      if (known.result) await this.deliver(cmd.replyTo, { ...known.result, replayed: true });
      else this.log("info", `CMD_RUN ${cmd.cmdId} redelivered while running: not started twice`);
      return;
    }
    if (cmd.issuedAt < this.restoredAt) {
      return this.reject(json, `rolled back: issued before this VM was restored from a snapshot at ${new Date(this.restoredAt).toISOString()}; it may have run in the discarded state`);
    }
    const now = Date.now();
    if (cmd.expiresAt < now) return this.reject(json, `expired at ${new Date(cmd.expiresAt).toISOString()} (agent clock ${new Date(now).toISOString()})`);
    const output = new OutputWindow(this.bus, cmd.replyTo, this.log);
    const command = new RunningCommand(this.agentId, cmd, {
      output,
      congested: () => this.bus.bufferedBytes > 4 * 1024 * 1024,
      drained: () => this.bus.drained(1024 * 1024),
      log: this.log,
    }, this.wrappers);
    // Registered before the journal record lands, so CMD_INPUT / CMD_CANCEL arriving meanwhile find it.
    this.commands.set(cmd.cmdId, command);
    const durable = this.journal.accept(cmd.cmdId, cmd.replyTo, cmd.expiresAt);
    // The wrapper process starts while the record is made durable; the command only after.
    command.start((pid, startTime) => this.journal.started(cmd.cmdId, pid, startTime), durable);
    try {
      await durable;
    } catch (e) {
      this.commands.delete(cmd.cmdId);
      command.discard();
      output.close();
      // Without a durable record the command could run twice: refuse it rather than run it.
      return this.reject(json, `cannot record the command in the journal: ${e instanceof Error ? e.message : String(e)}`);
    }
    m.ack();
    const result = await command.done;
    output.close();
    this.commands.delete(cmd.cmdId);
    // Published without waiting for the record to be durable (see journal.ts: a crash in between closes it as `lost`, never reruns it).
    void this.journal.finish(cmd.cmdId, result);
    void this.deliver(cmd.replyTo, result);
  }

  private async onInput(json: unknown): Promise<void> {
    const parsed = CmdInput.safeParse(json);
    if (!parsed.success) return this.log("warn", "dropped an invalid CMD_INPUT");
    if (parsed.data.agentId !== this.agentId || !verifyMessage(json as object, this.key)) return this.log("warn", `dropped CMD_INPUT for ${parsed.data.cmdId}: wrong agent or bad signature`);
    const command = this.commands.get(parsed.data.cmdId);
    if (!command) return this.log("info", `CMD_INPUT for ${parsed.data.cmdId}, which is not running`);
    await command.input(parsed.data);
  }

  private onCancel(json: unknown): void {
    const parsed = CmdCancel.safeParse(json);
    if (!parsed.success) return this.log("warn", "dropped an invalid CMD_CANCEL");
    if (parsed.data.agentId !== this.agentId || !verifyMessage(json as object, this.key)) return this.log("warn", `dropped CMD_CANCEL for ${parsed.data.cmdId}: wrong agent or bad signature`);
    const command = this.commands.get(parsed.data.cmdId);
    if (!command) return this.log("info", `CMD_CANCEL for ${parsed.data.cmdId}, which is not running`);
    command.cancel();
  }

  /** Answers a refused CMD_RUN with a `rejected` result when it names a usable cmdId and replyTo. Never journalled. */
  private async reject(json: unknown, reason: string): Promise<void> {
    const { cmdId, replyTo } = (typeof json === "object" && json !== null ? json : {}) as { cmdId?: unknown; replyTo?: unknown };
    this.log("warn", `refused CMD_RUN ${typeof cmdId === "string" ? cmdId.slice(0, 128) : "?"}: ${reason}`);
    if (!CmdId.safeParse(cmdId).success || typeof replyTo !== "string" || !SANE_REPLY_TO.test(replyTo)) return;
    await this.bus
      .publishJson(replyTo, failedResult(this.agentId, cmdId as string, "rejected", reason), { headers: { persistent: "true" }, timeoutMs: 10_000 })
      .catch((e: unknown) => this.log("warn", `could not send the refusal: ${String(e)}`));
  }

  /** Publishes a result until the broker confirms it (retrying across reconnects). */
  private deliver(replyTo: string, result: CmdResult): Promise<void> {
    const key = `${result.cmdId}${result.replayed ? "#replay" : ""}`;
    const existing = this.delivering.get(key);
    if (existing) return existing;
    const attempt = this.sendUntilConfirmed(replyTo, result).finally(() => this.delivering.delete(key));
    this.delivering.set(key, attempt);
    return attempt;
  }

  private async sendUntilConfirmed(replyTo: string, result: CmdResult): Promise<void> {
    {
      for (let attempt = 0; attempt < 40; attempt++) {
        try {
          await this.bus.publishJson(replyTo, result, { receipt: true, headers: { persistent: "true" }, timeoutMs: 30_000 });
          if (!result.replayed) this.journal.markDelivered(result.cmdId);
          return;
        } catch (e) {
          if (this.bus.state === "closed") return;
          this.log("debug", `result ${result.cmdId} not confirmed (${String(e)}), retrying`);
          await delay(Math.min(250 * 2 ** attempt, 30_000));
        }
      }
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function killOrphan(pid: number | undefined, started: string | undefined): void {
  if (pid === undefined || started === undefined || processStartTime(pid) !== started) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone
  }
}
