/**
 * Keeps the endpoint's controller: opened at start and, when that fails (broker down, say),
 * opened again with backoff, so an endpoint started before its broker becomes useful without a
 * restart. Requests meanwhile are answered BrokerUnavailable with the reason.
 * @packageDocumentation
 */
import { VmcError, VmcErrorCodes } from "@vmc/protocol/errors";
import type { Controller } from "../controller/controller";
import { handlerTable, type HandlerTable } from "./handlers";

export class ControllerHolder {
  private controller: Controller | undefined;
  private handlers: HandlerTable | undefined;
  private attempt: Promise<void> | undefined;
  private firstAttempt: Promise<void> | undefined;
  private lastError = "not started";
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly open: () => Promise<Controller>,
    private readonly log: (message: string) => void,
  ) {}

  start(): void {
    this.firstAttempt = this.tryOpen(0);
  }

  private tryOpen(failures: number): Promise<void> {
    this.attempt = this.open().then(
      async (c) => {
        if (this.closed) return void (await c.close());
        this.controller = c;
        this.handlers = handlerTable(c);
        if (failures) this.log(`controller up after ${failures} failed attempt(s)`);
      },
      (err: unknown) => {
        this.lastError = err instanceof Error ? err.message : String(err);
        if (this.closed) return;
        const delay = Math.min(10_000, 1000 * 2 ** failures);
        this.log(`the controller did not start: ${this.lastError} (next attempt in ${delay} ms)`);
        this.retry = setTimeout(() => void this.tryOpen(failures + 1), delay);
      },
    );
    return this.attempt;
  }

  /** The handler table; waits for the first attempt; BrokerUnavailable while the controller is down. */
  async table(): Promise<HandlerTable> {
    if (!this.handlers) await this.firstAttempt;
    if (this.handlers) return this.handlers;
    throw new VmcError(VmcErrorCodes.BrokerUnavailable, `the controller is not running: ${this.lastError} (retrying)`);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.attempt;
    await this.controller?.close();
  }
}
