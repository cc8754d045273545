/** A message held by the broker: what was SENT, plus what the broker needs to route, expire and journal it. */
import { escapeHeader, type StompVersion } from "./frame";

export interface StoredMessage {
  /** Broker-wide sequence number; the journal key of a persistent message. */
  id: number;
  /** The SEND destination, reported in MESSAGE frames as RabbitMQ does. */
  destination: string;
  /** Headers forwarded to consumers (SEND headers minus transport ones). */
  headers: Array<[string, string]>;
  body: Buffer;
  persistent: boolean;
  /** Epoch ms after which the message is dropped; 0 = never. */
  expiresAt: number;
  redelivered: boolean;
  /** Has a journal record that must be removed when the message is done. */
  journaled: boolean;
  /** Escaped `destination` + forwarded headers per STOMP version, built on first delivery. */
  block?: Partial<Record<StompVersion, string>>;
}

/** Headers of a SEND frame that are about the frame, not the message. */
const transportHeaders = new Set(["destination", "receipt", "transaction", "content-length", "message-id", "subscription", "ack", "redelivered"]);

export function forwardedHeaders(headers: Map<string, string>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [k, v] of headers) if (!transportHeaders.has(k)) out.push([k, v]);
  return out;
}

export function headerBlock(m: StoredMessage, version: StompVersion): string {
  const cached = m.block?.[version];
  if (cached !== undefined) return cached;
  let s = "destination:" + escapeHeader(m.destination, version) + "\n";
  for (const [k, v] of m.headers) s += escapeHeader(k, version) + ":" + escapeHeader(v, version) + "\n";
  (m.block ??= {})[version] = s;
  return s;
}

export function messageBytes(m: StoredMessage): number {
  return m.body.length + 256;
}
