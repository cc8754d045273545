/**
 * Serves a {@link HandlerTable} on a JSON-RPC connection (vscode-jsonrpc's MessageConnection or
 * vscode-languageserver's Connection: both give star handlers). Every request goes through one
 * dispatch: refuse after shutdown, unknown method → -32601, params checked with the method's zod
 * schema → -32602 naming the field, `$/cancelRequest` → the handler's AbortSignal, typed errors →
 * their code, message and data.
 * @packageDocumentation
 */
import { ResponseError, type CancellationToken, type Disposable, type StarNotificationHandler, type StarRequestHandler } from "vscode-jsonrpc";
import { z } from "zod";
import { RpcErrorCodes, VmcError, VmcErrorCodes } from "@vmc/protocol/errors";
import {
  AgentChangedNotification,
  BrokerStateNotification,
  CmdFinishedNotification,
  CmdOutputNotification,
  CmdStartedNotification,
  ProgressNotification,
  VmStateChangedNotification,
  type TransferProgressValue,
} from "@vmc/protocol/rpc";
import type { ControllerEvents } from "../controller/controller";
import { TargetSyntaxError } from "../fleet/target";
import type { HandlerTable } from "./handlers";

/** What the endpoint needs of a connection. */
export interface RpcConnection {
  onRequest(handler: StarRequestHandler): Disposable;
  onNotification(handler: StarNotificationHandler): Disposable;
  sendNotification(method: string, params?: unknown): Promise<void>;
}

export interface EndpointOptions {
  /** The table, once the controller is up (requests wait for it; its error is the answer when it is down). */
  table: () => Promise<HandlerTable>;
  log: (message: string) => void;
  /** Methods the connection answers itself (LSP's `initialize`, `shutdown`...): never dispatched here. */
  reserved?: readonly string[];
}

export class Endpoint {
  private shuttingDown = false;
  private closed = false;
  private readonly running = new Set<AbortController>();
  private inflight = 0;

  constructor(
    private readonly connection: RpcConnection,
    private readonly options: EndpointOptions,
  ) {
    connection.onRequest(async (method, params, token) => {
      this.inflight++;
      try {
        return await this.dispatch(method, params, token);
      } finally {
        this.inflight--;
      }
    });
    connection.onNotification((method) => {
      if (!method.startsWith("$/")) options.log(`notification '${method.slice(0, 100)}' dropped: no such notification`);
    });
  }

  /** Further requests are refused with ShuttingDown; running ones are cancelled when `abortRunning`. */
  shutdown(abortRunning = false): void {
    this.shuttingDown = true;
    if (abortRunning) for (const ac of this.running) ac.abort();
  }

  /** No more notifications (the output is going away). */
  close(): void {
    this.shutdown(true);
    this.closed = true;
  }

  /** Resolves once the requests already received (queued or running) are answered. */
  async drain(): Promise<void> {
    for (let idle = 0; idle < 3; ) {
      await new Promise((r) => setImmediate(r));
      idle = this.inflight === 0 ? idle + 1 : 0;
    }
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** The controller's events, sent as the catalogue's notifications. */
  events(): ControllerEvents {
    const send = (method: string, params: unknown) => {
      if (this.closed) return;
      try {
        this.connection.sendNotification(method, params).catch((e: unknown) => this.options.log(`notification ${method} not sent: ${String(e)}`));
      } catch (e) {
        // the connection closed its input: nobody to tell
        this.options.log(`notification ${method} not sent: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    return {
      vmStateChanged: (c) => send(VmStateChangedNotification.method, c),
      agentChanged: (a) => send(AgentChangedNotification.method, a),
      brokerState: (s) => send(BrokerStateNotification.method, s),
      cmdStarted: (r) => send(CmdStartedNotification.method, r),
      cmdOutput: (e) => send(CmdOutputNotification.method, e),
      cmdFinished: (r) => send(CmdFinishedNotification.method, r),
    };
  }

  private async dispatch(method: string, raw: unknown, token: CancellationToken): Promise<unknown> {
    if (this.shuttingDown) {
      this.options.log(`request '${method.slice(0, 100)}' refused: shutting down`);
      throw new ResponseError(VmcErrorCodes.ShuttingDown, `the server is shutting down: '${method.slice(0, 100)}' refused`);
    }
    if (this.options.reserved?.includes(method)) throw new ResponseError(RpcErrorCodes.InvalidRequest, `'${method}' is not accepted now`);
    let table: HandlerTable;
    try {
      table = await this.options.table();
    } catch (err) {
      throw toResponseError(err, method, false);
    }
    const handler = table.get(method);
    if (!handler) throw new ResponseError(RpcErrorCodes.MethodNotFound, `unknown method '${method.slice(0, 100)}'`);
    const parsed = handler.params.safeParse(byName(raw));
    if (!parsed.success) throw invalidParams(parsed.error);
    const ac = new AbortController();
    const sub = token.onCancellationRequested(() => ac.abort());
    if (token.isCancellationRequested) ac.abort();
    this.running.add(ac);
    const progressToken = workDoneToken(parsed.data);
    const progress = (value: TransferProgressValue) => {
      if (progressToken === undefined || this.closed) return;
      try {
        this.connection.sendNotification(ProgressNotification.method, { token: progressToken, value }).catch(() => undefined);
      } catch {
        // input closed: progress has no reader any more
      }
    };
    try {
      const result = await handler.handle(parsed.data, { signal: ac.signal, progress });
      if (ac.signal.aborted && result !== null && typeof result === "object" && "state" in result) {
        // A cancelled cmd.run (wait: true) answers with the record it ended with, as the error's data.
        throw new ResponseError(RpcErrorCodes.RequestCancelled, "request cancelled", { result });
      }
      return result;
    } catch (err) {
      throw toResponseError(err, method, ac.signal.aborted);
    } finally {
      sub.dispose();
      this.running.delete(ac);
    }
  }
}

/** Params by position are accepted when they are `[]` (no params) or `[{...}]` (the object). */
function byName(raw: unknown): unknown {
  if (!Array.isArray(raw)) return raw;
  if (raw.length === 0) return undefined;
  if (raw.length === 1 && typeof raw[0] === "object" && raw[0] !== null && !Array.isArray(raw[0])) return raw[0];
  return raw;
}

function workDoneToken(params: unknown): string | number | undefined {
  if (typeof params !== "object" || params === null || !("workDoneToken" in params)) return undefined;
  const t = (params as { workDoneToken?: unknown }).workDoneToken;
  return typeof t === "string" || typeof t === "number" ? t : undefined;
}

/** -32602 whose message names each bad field and why; `data.issues` has zod's issues. */
export function invalidParams(error: z.ZodError): ResponseError<{ issues: unknown[] }> {
  const described = error.issues.slice(0, 5).map((i) => `${fieldPath(i.path)}: ${i.message}`);
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : "";
  const issues = error.issues.slice(0, 20).map((i) => ({ path: i.path.map((p) => (typeof p === "symbol" ? String(p) : p)), code: i.code, message: i.message }));
  return new ResponseError(RpcErrorCodes.InvalidParams, `invalid params: ${described.join("; ")}${more}`, { issues });
}

function fieldPath(path: readonly PropertyKey[]): string {
  let s = "params";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : `.${String(p)}`;
  return s;
}

function toResponseError(err: unknown, method: string, cancelled: boolean): ResponseError<unknown> {
  if (err instanceof ResponseError) return err;
  if (err instanceof VmcError) return new ResponseError(err.code, err.message, err.data);
  if (cancelled) return new ResponseError(RpcErrorCodes.RequestCancelled, "request cancelled");
  if (err instanceof TargetSyntaxError) return new ResponseError(RpcErrorCodes.InvalidParams, err.message, { field: "target" });
  const message = err instanceof Error ? err.message : String(err);
  return new ResponseError(RpcErrorCodes.InternalError, `${method} failed: ${message}`);
}
