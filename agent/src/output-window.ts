/**
 * At-least-once CMD_OUTPUT for one command. Every message is published with a receipt
 * (pipelined: the next one goes out without waiting) and kept until the broker confirms it.
 * When a publish fails (the link dropped, or no receipt in time) every unconfirmed message is
 * sent again, in order, on the next connection and before anything newer: frames that were
 * still in a dead socket's buffers are never silently lost. The controller drops what it
 * already has by `offset`, so a message that arrives twice is harmless.
 *
 * Memory stays bounded because the executor pauses the child's pipes while
 * {@link OutputWindow.unconfirmedBytes} is above its limit.
 */
import type { CmdOutput } from "@vmc/protocol/bus";
import type { BusClient, BusLogger } from "@vmc/server/bus/client";

interface Entry {
  body: string;
  bytes: number;
}

/** Wait before re-sending over a link that is still up (a receipt timed out), so failures never spin. */
const RESEND_PAUSE_MS = 100;

export class OutputWindow {
  /** Unconfirmed messages, oldest first. */
  private entries: Entry[] = [];
  /** Entries before this index were sent in the current round. */
  private sentUpTo = 0;
  /** Bumped by each failure: older rounds' failures are stale. */
  private round = 0;
  private bytes = 0;
  private waiters: Array<{ limit: number; resolve: () => void }> = [];
  private resendTimer: NodeJS.Timeout | undefined;
  private gaveUp = false;
  private readonly offState: () => void;

  constructor(
    private readonly bus: BusClient,
    private readonly destination: string,
    private readonly log: BusLogger,
    private readonly receiptTimeoutMs = 30_000,
  ) {
    this.offState = bus.onState((state) => {
      if (state === "connected") this.pump();
      else if (state === "closed") this.giveUp("the bus was closed");
    });
  }

  /** Raw output bytes handed to {@link send} and not yet confirmed by the broker. */
  get unconfirmedBytes(): number {
    return this.bytes;
  }

  /** Queues one CMD_OUTPUT (`rawBytes` = its decoded data length) and sends it when connected. */
  send(message: CmdOutput, rawBytes: number): void {
    if (this.gaveUp) return;
    this.entries.push({ body: JSON.stringify(message), bytes: rawBytes });
    this.bytes += rawBytes;
    this.pump();
  }

  /** Resolves once at most `limit` bytes are unconfirmed (0: everything confirmed), or the bus closed. */
  whenBelow(limit: number): Promise<void> {
    if (this.bytes <= limit || this.gaveUp) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ limit, resolve }));
  }

  /** Stops listening to the bus; call once the command's result is out. */
  close(): void {
    this.offState();
    clearTimeout(this.resendTimer);
  }

  private pump(): void {
    while (this.sentUpTo < this.entries.length && this.bus.connected && !this.gaveUp) {
      const entry = this.entries[this.sentUpTo++] as Entry;
      const round = this.round;
      this.bus
        .publish(this.destination, entry.body, {
          receipt: true,
          timeoutMs: this.receiptTimeoutMs,
          headers: { "content-type": "application/json", persistent: "true" },
        })
        .then(
          () => this.confirmed(entry),
          (e: unknown) => this.failed(round, e),
        );
    }
  }

  private confirmed(entry: Entry): void {
    // An entry sent in two rounds may be confirmed twice: only the first counts.
    const at = this.entries.indexOf(entry);
    if (at < 0) return;
    this.entries.splice(at, 1);
    if (at < this.sentUpTo) this.sentUpTo--;
    this.bytes -= entry.bytes;
    this.wake();
  }

  private failed(round: number, e: unknown): void {
    if (round !== this.round || this.gaveUp) return;
    if (this.bus.state === "closed") return this.giveUp("the bus was closed");
    this.round++;
    this.sentUpTo = 0;
    this.log("info", `re-sending ${this.entries.length} unconfirmed output message(s) to ${this.destination}: ${e instanceof Error ? e.message : String(e)}`);
    // A dropped link re-sends on the next "connected"; a live one (receipt timeout) after a short pause.
    clearTimeout(this.resendTimer);
    this.resendTimer = setTimeout(() => this.pump(), RESEND_PAUSE_MS);
  }

  private giveUp(reason: string): void {
    if (this.gaveUp) return;
    this.gaveUp = true;
    if (this.bytes > 0) this.log("warn", `${this.bytes} bytes of output to ${this.destination} not confirmed: ${reason}`);
    this.entries = [];
    this.bytes = 0;
    this.wake();
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.bytes <= w.limit || this.gaveUp) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }
}
