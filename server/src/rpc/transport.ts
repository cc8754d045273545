/**
 * MessageReader/MessageWriter for both endpoints and both framings. The reader never gives up on
 * its stream (see ./frames): bytes it cannot use are dropped with a logged reason, a body that is
 * not JSON is answered with -32700, and a JSON value that is not a JSON-RPC 2.0 message with
 * -32600 (when it carries a usable id) before vscode-jsonrpc ever sees it.
 * @packageDocumentation
 */
import type { Readable, Writable } from "node:stream";
import { AbstractMessageReader, AbstractMessageWriter, type DataCallback, type Disposable, type Message, type MessageReader, type MessageWriter } from "vscode-jsonrpc";
import { RpcErrorCodes } from "@vmc/protocol/errors";
import { frameParser, type Framing } from "./frames";

/** Default cap on one message: fits the largest params the catalogue allows (90 MiB of base64). */
export const DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024 * 1024;

type Id = string | number | null;

export interface TransportOptions {
  framing: Framing;
  maxMessageBytes?: number;
  log: (message: string) => void;
}

export interface Transport {
  reader: MessageReader;
  writer: MessageWriter;
}

export function stdioTransport(input: Readable, output: Writable, options: TransportOptions): Transport {
  const writer = new FramedMessageWriter(output, options.framing, options.log);
  const reader = new ResilientMessageReader(input, options, (id, code, message, data) => {
    void writer.write({ jsonrpc: "2.0", id, error: { code, message, ...(data === undefined ? {} : { data }) } } as Message);
  });
  // A client that sends without reading our answers is slowed down instead of filling our memory.
  writer.onBacklog = (backlogged) => (backlogged ? input.pause() : input.resume());
  return { reader, writer };
}

type Reject = (id: Id, code: number, message: string, data?: unknown) => void;

class ResilientMessageReader extends AbstractMessageReader {
  private callback: DataCallback | undefined;

  constructor(
    private readonly input: Readable,
    private readonly options: TransportOptions,
    private readonly reject: Reject,
  ) {
    super();
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    const log = this.options.log;
    const parser = frameParser(this.options.framing, this.options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, {
      message: (body) => this.onBody(body, parser.rescue?.bind(parser)),
      dropped: (reason) => log(`dropped input: ${reason}`),
    });
    const onData = (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        log(`input dropped: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    const onEnd = () => this.fireClose();
    const onError = (err: Error) => this.fireError(err);
    this.input.on("data", onData);
    this.input.on("end", onEnd);
    this.input.on("error", onError);
    return {
      dispose: () => {
        this.input.off("data", onData);
        this.input.off("end", onEnd);
        this.input.off("error", onError);
        this.callback = undefined;
      },
    };
  }

  private onBody(body: Buffer, rescue: ((b: Buffer) => void) | undefined): void {
    let value: unknown;
    try {
      value = JSON.parse(body.toString("utf8"));
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.options.log(`parse error: ${reason} (${body.length} bytes)`);
      this.reject(null, RpcErrorCodes.ParseError, `Parse error: ${reason}`);
      rescue?.(body);
      return;
    }
    const problem = invalidMessage(value);
    if (problem) {
      const id = usableId(value);
      const isNotification = isObject(value) && typeof value.method === "string" && !("id" in value);
      this.options.log(`invalid message${id === null ? "" : ` (id ${JSON.stringify(id)})`}: ${problem}${isNotification ? " (a notification: not answered)" : ""}`);
      if (!isNotification) this.reject(id, RpcErrorCodes.InvalidRequest, `Invalid request: ${problem}`);
      return;
    }
    if (isObject(value) && !("method" in value)) {
      // This server sends no requests, so no response can be awaited.
      this.options.log(`response to id ${JSON.stringify(value.id)} dropped: this server sends no requests`);
      return;
    }
    this.callback?.(value as Message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function usableId(v: unknown): Id {
  if (!isObject(v)) return null;
  const id = v.id;
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id)) ? id : null;
}

/** Why `v` is not a JSON-RPC 2.0 request, notification or response, or undefined when it is one. */
function invalidMessage(v: unknown): string | undefined {
  if (Array.isArray(v)) return "batches are not supported";
  if (!isObject(v)) return `a message is a JSON object, not ${v === null ? "null" : typeof v}`;
  if (v.jsonrpc !== "2.0") return `'jsonrpc' must be "2.0"`;
  const hasId = "id" in v;
  if (hasId && !(typeof v.id === "string" || (typeof v.id === "number" && Number.isFinite(v.id)) || (v.id === null && !("method" in v)))) {
    return "'id' must be a string or a number";
  }
  if ("method" in v) {
    if (typeof v.method !== "string") return "'method' must be a string";
    if (v.method.length > 256) return "'method' is longer than 256 characters";
    if ("params" in v && v.params !== undefined && typeof v.params !== "object") return "'params' must be an object or an array";
    if (v.params === null) return "'params' must be an object or an array";
    return undefined;
  }
  if (!hasId) return "neither a request (no 'method') nor a response (no 'id')";
  if ("result" in v === "error" in v) return "a response has exactly one of 'result' and 'error'";
  return undefined;
}

/** Notifications are dropped (responses never) while this much output waits for a slow reader. */
const MAX_QUEUED_OUTPUT_BYTES = 64 * 1024 * 1024;

/**
 * Writes messages in order, LSP framing or one JSON document per line. A client that stops
 * reading cannot make the server grow without bound: past {@link MAX_QUEUED_OUTPUT_BYTES} queued,
 * notifications are dropped (counted in the log); responses are always queued.
 */
class FramedMessageWriter extends AbstractMessageWriter implements MessageWriter {
  private queue: Promise<void> = Promise.resolve();
  private broken = false;
  private queuedBytes = 0;
  private droppedNotifications = 0;
  private backlogged = false;
  /** Called with true when the queue passes the bound, false when it has drained to half of it. */
  onBacklog: (backlogged: boolean) => void = () => undefined;

  constructor(
    private readonly output: Writable,
    private readonly framing: Framing,
    private readonly log: (message: string) => void,
  ) {
    super();
    output.on("error", (err) => {
      if (!this.broken) log(`output closed: ${err.message}`);
      this.broken = true;
      this.fireError(err);
    });
  }

  write(msg: Message): Promise<void> {
    const json = JSON.stringify(msg);
    const payload = this.framing === "ndjson" ? `${json}\n` : `Content-Length: ${Buffer.byteLength(json, "utf8")}\r\n\r\n${json}`;
    const isNotification = "method" in msg && !("id" in msg);
    if (isNotification && this.queuedBytes > MAX_QUEUED_OUTPUT_BYTES) {
      if (this.droppedNotifications++ % 1000 === 0) this.log(`the client is not reading: ${this.droppedNotifications} notification(s) dropped so far`);
      return Promise.resolve();
    }
    const size = payload.length;
    this.queuedBytes += size;
    if (!this.backlogged && this.queuedBytes > MAX_QUEUED_OUTPUT_BYTES) {
      this.backlogged = true;
      this.onBacklog(true);
    }
    this.queue = this.queue.then(
      () =>
        new Promise<void>((resolve) => {
          if (this.broken) {
            this.queuedBytes -= size;
            return resolve();
          }
          this.output.write(payload, "utf8", (err) => {
            this.queuedBytes -= size;
            if (this.backlogged && this.queuedBytes < MAX_QUEUED_OUTPUT_BYTES / 2) {
              this.backlogged = false;
              this.onBacklog(false);
            }
            if (err && !this.broken) {
              this.broken = true;
              this.log(`output closed: ${err.message}`);
              this.fireError(err);
            }
            resolve();
          });
        }),
    );
    return this.queue;
  }

  end(): void {}
}
