/**
 * A timeout that counts only time this process could run.
 *
 * Why ticks and not one setTimeout: the process driver pauses a VM by freezing its process tree
 * (cgroup freezer or SIGSTOP) while the host clock runs on, so after a 4 s freeze a plain timer
 * fires at once for time the command never had. Counting in short ticks and crediting each gap
 * with at most `maxCreditMs` discounts a freeze, whatever its cause, without any message from
 * the controller (which may be gone, or learn of the freeze late). Under QEMU the guest's
 * CLOCK_MONOTONIC stands still while the VM is stopped, so there is no gap to discount and the
 * same code is right there too (measured: docs/COMMANDS.md). The cost: an event loop blocked for
 * longer than `maxCreditMs` counts that block short, so a timeout can only ever run late, never early.
 */
import { performance } from "node:perf_hooks";

export const RUNNING_TICK_MS = 250;
/** A gap longer than this between ticks is a freeze: only this much of it is counted. */
export const MAX_TICK_CREDIT_MS = 500;

export class RunningTimeout {
  private counted = 0;
  private last = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly fire: () => void,
    private readonly tickMs = RUNNING_TICK_MS,
    private readonly maxCreditMs = MAX_TICK_CREDIT_MS,
  ) {
    this.schedule();
  }

  /** Running time counted so far, ms. */
  get elapsedMs(): number {
    return this.counted + Math.min(performance.now() - this.last, this.maxCreditMs);
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    const left = this.timeoutMs - this.counted;
    this.timer = setTimeout(() => this.tick(), Math.max(1, Math.min(this.tickMs, left)));
  }

  private tick(): void {
    const now = performance.now();
    this.counted += Math.min(now - this.last, this.maxCreditMs);
    this.last = now;
    if (this.counted >= this.timeoutMs - 1) {
      this.timer = undefined;
      return this.fire();
    }
    this.schedule();
  }
}
