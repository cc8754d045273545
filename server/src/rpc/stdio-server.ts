/**
 * Runs the controller API on stdin/stdout, for `vmc rpc` (vscode-jsonrpc, LSP or ndjson framing)
 * and `vmc serve --stdio` (vscode-languageserver, LSP framing). Both register the same handler
 * table through the same {@link Endpoint}; only the connection object and its lifecycle methods
 * differ. stdout carries protocol only: logs go to stderr.
 * @packageDocumentation
 */
import { createMessageConnection, ResponseError } from "vscode-jsonrpc/node";
import { VmcErrorCodes } from "@vmc/protocol/errors";
import { Controller } from "../controller/controller";
import { vmcHome } from "../config";
import { Endpoint } from "./endpoint";
import { ControllerHolder } from "./controller-holder";
import { stderrLog } from "./log";
import { stdioTransport } from "./transport";
import type { Framing } from "./frames";

export const SERVER_VERSION = "0.1.0";

export interface StdioServerOptions {
  kind: "rpc" | "serve";
  framing: Framing;
  brokerUrl?: string;
  maxMessageBytes?: number;
}

/** Serves until the client says `exit` or closes stdin; resolves with the exit code. */
export async function runStdioServer(options: StdioServerOptions): Promise<number> {
  const log = stderrLog(`vmc ${options.kind}`);
  // Nothing may write to stdout but the protocol.
  console.log = console.info = console.debug = (...args: unknown[]) => log(args.map(String).join(" "));
  const { reader, writer } = stdioTransport(process.stdin, process.stdout, { framing: options.framing, log, maxMessageBytes: options.maxMessageBytes });

  let holder: ControllerHolder | undefined;
  let closing: Promise<void> | undefined;
  const closeController = (): Promise<void> => {
    closing ??= (holder?.close() ?? Promise.resolve()).catch((e: unknown) => log(`close: ${String(e)}`));
    return closing;
  };
  const table = () => holder!.table();

  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));

  if (options.kind === "serve") {
    const { createConnection } = await import("vscode-languageserver/node");
    const connection = createConnection(reader, writer);
    const endpoint = new Endpoint(connection, { table, log, reserved: ["initialize", "shutdown"] });
    open(endpoint);
    connection.onInitialize(() => ({ capabilities: {}, serverInfo: { name: "vmc", version: SERVER_VERSION } }));
    connection.onShutdown(async () => {
      endpoint.shutdown();
      await closeController();
    });
    connection.onExit(() => {
      endpoint.close();
      log("exit");
    });
    connection.onInitialized(() => undefined);
    connection.onDidChangeConfiguration(() => undefined);
    reader.onClose(() => void endOfInput(endpoint));
    connection.listen();
  } else {
    const connection = createMessageConnection(reader, writer, { error: log, warn: log, info: () => undefined, log: () => undefined });
    const endpoint = new Endpoint(connection, { table, log });
    open(endpoint);
    let shutdownReceived = false;
    connection.onRequest("shutdown", async () => {
      if (shutdownReceived) throw new ResponseError(VmcErrorCodes.ShuttingDown, "the server is shutting down: 'shutdown' refused");
      shutdownReceived = true;
      endpoint.shutdown();
      await closeController();
      return null;
    });
    connection.onNotification("exit", () => {
      endpoint.close();
      void closeController().then(() => finish(shutdownReceived ? 0 : 1));
    });
    connection.onClose(() => void endOfInput(endpoint));
    connection.listen();
  }

  /** The client closed its side: answer what it sent, then stop. */
  async function endOfInput(endpoint: Endpoint): Promise<void> {
    await endpoint.drain();
    endpoint.close();
    await closeController();
    finish(0);
  }

  function open(endpoint: Endpoint): void {
    holder = new ControllerHolder(() => Controller.open({ home: vmcHome(), brokerUrl: options.brokerUrl, serverVersion: SERVER_VERSION, events: endpoint.events(), log }), log);
    holder.start();
  }

  // Terminated by a supervisor (BOINC client, editor): close the controller so the command history is flushed.
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.once(signal, () => {
      log(`${signal}: closing`);
      void closeController().then(() => finish(0));
    });
  }

  const code = await finished;
  // Sockets of the bus and driver watches may linger a moment; the endpoint is done.
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}
