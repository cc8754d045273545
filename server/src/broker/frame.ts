/**
 * STOMP frames as the broker sees them: a command, headers (first occurrence wins, as the
 * spec says) and a binary body. Serialisation produces one Buffer per frame.
 */

export type StompVersion = "1.0" | "1.1" | "1.2";

export interface Frame {
  command: string;
  /** Decoded headers in wire order; a repeated name keeps its first value. */
  headers: Map<string, string>;
  body: Buffer;
}

export const clientCommands = new Set([
  "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT", "DISCONNECT",
]);

const needsEscape12 = /[\\\r\n:]/;
const escapeRe12 = /[\\\r\n:]/g;
const needsEscape11 = /[\\\n:]/;
const escapeRe11 = /[\\\n:]/g;
const escapes: Record<string, string> = { "\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c" };

/** STOMP header escaping: none in 1.0, `\\ \n \c` in 1.1, plus `\r` in 1.2. */
export function escapeHeader(value: string, version: StompVersion): string {
  if (version === "1.0") return value;
  if (version === "1.1") return needsEscape11.test(value) ? value.replace(escapeRe11, (c) => escapes[c] ?? c) : value;
  return needsEscape12.test(value) ? value.replace(escapeRe12, (c) => escapes[c] ?? c) : value;
}

/** Undoes 1.1/1.2 escaping; undefined for an escape the spec does not define (a fatal protocol error). */
export function unescapeHeader(value: string, version: StompVersion): string | undefined {
  if (version === "1.0" || value.indexOf("\\") < 0) return value;
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c !== "\\") {
      out += c;
      continue;
    }
    const n = value[++i];
    if (n === "\\") out += "\\";
    else if (n === "n") out += "\n";
    else if (n === "c") out += ":";
    else if (n === "r" && version === "1.2") out += "\r";
    else return undefined;
  }
  return out;
}

/**
 * One Buffer holding `command`, the headers (already escaped by the caller when `preEscaped`
 * is a block of "k:v\n" lines), `content-length` and the body.
 */
export function serializeFrame(command: string, headers: Array<[string, string]>, body: Buffer | undefined, version: StompVersion, preEscaped = ""): Buffer {
  const escape = command !== "CONNECTED";
  let head = command + "\n";
  for (const [k, v] of headers) head += (escape ? escapeHeader(k, version) : k) + ":" + (escape ? escapeHeader(v, version) : v) + "\n";
  head += preEscaped;
  const bodyLength = body ? body.length : 0;
  if (body) head += "content-length:" + bodyLength + "\n";
  head += "\n";
  const headLength = Buffer.byteLength(head);
  const out = Buffer.allocUnsafe(headLength + bodyLength + 1);
  out.write(head, 0, headLength, "utf8");
  if (body) body.copy(out, headLength);
  out[headLength + bodyLength] = 0;
  return out;
}
