import { HandshakeRequest, type Handshake } from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  type NotificationType,
  ProgressType,
  type RequestType,
  State,
} from "vscode-languageclient/node";
import { loadCredentials } from "./credentials";
import { serverExecutable } from "./server-options";
import { readSettings } from "./settings";

export type ControllerState = "starting" | "running" | "stopped";

/** Restarts allowed inside {@link RESTART_WINDOW_MS} before giving up and asking the user. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
/** How long a request waits for a (re)starting server before failing. */
const READY_WAIT_MS = 90_000;

/**
 * The editor's end of the controller API: owns the `vmc serve --stdio` process (through
 * vscode-languageclient), restarts it when it dies, and tells the views when a fresh server is
 * ready so they fill themselves again. Views and commands only see typed requests and
 * notifications from @vmc/protocol/rpc.
 */
export class Controller implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private disposing = false;
  private restarts: number[] = [];
  private readonly handlers = new Map<string, vscode.EventEmitter<unknown>>();
  private readonly readyEmitter = new vscode.EventEmitter<Handshake>();
  private readonly stateEmitter = new vscode.EventEmitter<ControllerState>();
  private currentState: ControllerState = "stopped";
  private lastHandshake: Handshake | undefined;
  private readyPromise: Promise<Handshake> | undefined;
  private resolveReady: ((h: Handshake) => void) | undefined;
  private readyResolved = false;

  /** A fresh server answered the handshake (after the first start and after every restart). */
  readonly onDidBecomeReady = this.readyEmitter.event;
  readonly onDidChangeState = this.stateEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.resetReady();
  }

  get state(): ControllerState {
    return this.currentState;
  }

  get handshake(): Handshake | undefined {
    return this.lastHandshake;
  }

  /** Resolves with the handshake once a server is up (at once when one is). */
  ready(): Promise<Handshake> {
    return this.readyPromise!;
  }

  private async readyWithin(ms: number, what: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: the controller is not running (see the VM Controller log)`)), ms);
    });
    try {
      await Promise.race([this.ready(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async start(): Promise<void> {
    const settings = readSettings();
    const credentials = await loadCredentials(this.context.secrets);
    const executable = serverExecutable(this.context, settings, credentials);
    this.log.info(`starting controller: ${executable.command} ${(executable.args ?? []).join(" ")}`);
    const client = new LanguageClient("vmc", "VM Controller", executable, {
      documentSelector: [],
      outputChannel: this.log,
      connectionOptions: { maxRestartCount: Number.MAX_SAFE_INTEGER },
      errorHandler: {
        error: (error, _message, count) => {
          this.log.error(`controller connection error: ${error.message}`);
          return { action: (count ?? 0) < 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true };
        },
        closed: () => this.onClosed(),
      },
    });
    this.client = client;
    for (const [method, emitter] of this.handlers) client.onNotification(method, (params: unknown) => emitter.fire(params));
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) void this.afterStart(client);
      else if (e.newState === State.Starting) this.setState("starting");
      else {
        this.setState("stopped");
        this.resetReady();
      }
    });
    this.setState("starting");
    await client.start();
  }

  /** Stops the server and starts a new one (settings may have changed). */
  async restart(): Promise<void> {
    const old = this.client;
    this.client = undefined;
    this.disposing = true;
    try {
      await old?.stop(5000);
    } catch (error) {
      this.log.warn(`stopping the controller: ${(error as Error).message}`);
    } finally {
      await old?.dispose().catch(() => undefined);
      this.disposing = false;
    }
    this.restarts = [];
    await this.start();
  }

  async request<P, R>(type: RequestType<P, R, void>, params: P, token?: vscode.CancellationToken): Promise<R> {
    if (this.currentState !== "running") await this.readyWithin(READY_WAIT_MS, type.method);
    const client = this.client;
    if (!client) throw new Error("the controller is not running");
    // By method name: the catalogue's types already tie params and result together. An undefined
    // token must not be passed: vscode-jsonrpc would count it as a second parameter (an array).
    const p = params === undefined ? {} : params;
    return token ? client.sendRequest<R>(type.method, p, token) : client.sendRequest<R>(type.method, p);
  }

  /** A notification from the server; the subscription outlives server restarts. */
  onNotification<P>(type: NotificationType<P>, listener: (params: P) => void): vscode.Disposable {
    let emitter = this.handlers.get(type.method);
    if (!emitter) {
      emitter = new vscode.EventEmitter<unknown>();
      this.handlers.set(type.method, emitter);
      const e = emitter;
      this.client?.onNotification(type.method, (params: unknown) => e.fire(params));
    }
    return emitter.event((p) => listener(p as P));
  }

  /** `$/progress` for one token of the current server. */
  onProgress<V>(token: string, listener: (value: V) => void): vscode.Disposable {
    const client = this.client;
    if (!client) return new vscode.Disposable(() => undefined);
    return client.onProgress(new ProgressType<V>(), token, listener);
  }

  async dispose(): Promise<void> {
    this.disposing = true;
    const client = this.client;
    this.client = undefined;
    try {
      await client?.stop(3000);
    } catch {
      // the server may be gone already
    }
    for (const e of this.handlers.values()) e.dispose();
    this.readyEmitter.dispose();
    this.stateEmitter.dispose();
  }

  private async afterStart(client: LanguageClient): Promise<void> {
    try {
      const handshake = await client.sendRequest(HandshakeRequest.type, { client: `vscode ${vscode.version}` });
      if (client !== this.client) return;
      this.lastHandshake = handshake;
      this.log.info(`controller ${handshake.serverVersion} ready (protocol ${handshake.protocolVersion}, broker ${handshake.broker}, ${handshake.brokerConnected ? "connected" : "not connected"})`);
      this.setState("running");
      this.resolveReady?.(handshake);
      this.readyResolved = true;
      this.readyEmitter.fire(handshake);
    } catch (error) {
      this.log.error(`handshake failed: ${(error as Error).message}`);
    }
  }

  private onClosed(): { action: CloseAction; handled: boolean; message?: string } {
    this.setState("stopped");
    this.resetReady();
    if (this.disposing) return { action: CloseAction.DoNotRestart, handled: true };
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    this.restarts.push(now);
    if (this.restarts.length > MAX_RESTARTS) {
      this.log.error(`the controller died ${MAX_RESTARTS} times in a minute; not restarting`);
      void vscode.window.showErrorMessage("The VM Controller server keeps dying. See the log.", "Show Log", "Restart").then((pick) => {
        if (pick === "Show Log") this.log.show();
        if (pick === "Restart") void this.restart();
      });
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    this.log.warn("the controller process ended; restarting it");
    return { action: CloseAction.Restart, handled: true };
  }

  private setState(state: ControllerState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.stateEmitter.fire(state);
  }

  private resetReady(): void {
    // A pending promise is kept: callers already waiting on it get the next server.
    if (this.readyPromise && !this.readyResolved) return;
    this.readyResolved = false;
    this.readyPromise = new Promise((resolve) => (this.resolveReady = resolve));
  }
}
