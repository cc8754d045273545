/**
 * The brokers the conformance suite and the bus benchmark run against, each with start/stop and
 * the documented ways it differs from the others (its quirks). The suite asserts the same
 * behaviour everywhere; a test that depends on a quirk reads it from here, and docs/CONFORMANCE.md
 * explains each one. A quirk is a fact about the real broker, never a way to excuse a bug.
 */
import { existsSync } from "node:fs";
import { activeMqInstalled, startActiveMq } from "./activemq";
import { startEmbeddedBroker, vmcBundle } from "./embedded-broker";
import { rabbitMqInstalled, startRabbitMq } from "./rabbitmq";

export type BrokerKind = "embedded" | "rabbitmq" | "activemq";

export interface RunningBroker {
  url: string;
  host: string;
  port: number;
  /** Pid of the broker's process group leader (for memory measurements). */
  readonly pid: number;
  stop(): Promise<void>;
  /** Stops and starts again on the same port and data (persistent messages must survive). */
  restart(): Promise<void>;
  log(): string;
}

export interface BrokerQuirks {
  /**
   * Client → broker heart-beats must stay off: RabbitMQ 3.10's STOMP adapter drops connections
   * under load when the client sends them (broker → client heart-beats are fine).
   */
  clientHeartbeatsUnreliable: boolean;
  /** RabbitMQ's `/temp-queue/` reply destinations (reply-to rewritten to `/reply-queue/...`). */
  tempQueue: boolean;
  /** Honours the `x-expires` and `auto-delete` SUBSCRIBE/SEND headers on `/queue/` destinations. */
  queueExpiryHeaders: boolean;
  /** Honours the `prefetch-count` SUBSCRIBE header (RabbitMQ's extension). */
  prefetchCount: boolean;
  /** A CONNECT without `login` is accepted as this default user (RabbitMQ: `stomp.default_user`). */
  anonymousConnectAs?: string;
  /** Sends the `redelivered` header on MESSAGE frames (a RabbitMQ extension). */
  redeliveredHeader: boolean;
  /**
   * Closes the connection after every ERROR, as STOMP 1.2 requires. RabbitMQ closes only after
   * authentication errors and keeps the session open after others (bad command, bad destination).
   */
  errorClosesConnection: boolean;
  /**
   * After refusing a CONNECT (bad credentials) the broker closes the connection within this many
   * ms. RabbitMQ waits ~10 s before closing (refusing every frame meanwhile).
   */
  authErrorCloseMs: number;
  /**
   * How a SEND asks for message expiry: RabbitMQ's `expiration` header is a time-to-live in ms;
   * ActiveMQ reads `expires`, an absolute time in ms since the epoch (JMSExpiration).
   */
  expiry: { header: "expiration" | "expires"; absolute: boolean };
  /** Topic wildcard matching any number of words: `#` (RabbitMQ amq.topic) or `>` (ActiveMQ). */
  topicRestWildcard: "#" | ">";
  /** NACK puts the message back for redelivery (ActiveMQ sends it to the dead-letter queue). */
  nackRequeues: boolean;
  /** SUBSCRIBE/SEND to a destination type it does not know (`/nowhere/x`) gets an ERROR. */
  rejectsUnknownDestinationTypes: boolean;
}

export interface BrokerTarget {
  kind: BrokerKind;
  /** Human name used in test titles. */
  name: string;
  installed(): boolean;
  /** Hint shown when it is not installed. */
  hint: string;
  start(): Promise<RunningBroker>;
  quirks: BrokerQuirks;
}

export const embeddedTarget: BrokerTarget = {
  kind: "embedded",
  name: "embedded broker",
  installed: () => existsSync(vmcBundle),
  hint: "npm run build",
  start: () => startEmbeddedBroker(),
  quirks: {
    clientHeartbeatsUnreliable: false,
    tempQueue: true,
    queueExpiryHeaders: true,
    prefetchCount: true,
    redeliveredHeader: true,
    errorClosesConnection: true,
    authErrorCloseMs: 2000,
    rejectsUnknownDestinationTypes: true,
    expiry: { header: "expiration", absolute: false },
    nackRequeues: true,
    topicRestWildcard: "#",
  },
};

export const rabbitMqTarget: BrokerTarget = {
  kind: "rabbitmq",
  name: "RabbitMQ 3.10",
  installed: rabbitMqInstalled,
  hint: "apt-get install rabbitmq-server (scripts/provision)",
  start: () => startRabbitMq(),
  quirks: {
    clientHeartbeatsUnreliable: true,
    tempQueue: true,
    queueExpiryHeaders: true,
    prefetchCount: true,
    anonymousConnectAs: "guest",
    redeliveredHeader: true,
    errorClosesConnection: false,
    authErrorCloseMs: 15_000,
    rejectsUnknownDestinationTypes: true,
    expiry: { header: "expiration", absolute: false },
    nackRequeues: true,
    topicRestWildcard: "#",
  },
};

export const activeMqTarget: BrokerTarget = {
  kind: "activemq",
  name: "ActiveMQ Classic 5.17",
  installed: activeMqInstalled,
  hint: "apt-get install activemq (scripts/provision)",
  start: () => startActiveMq(),
  quirks: {
    clientHeartbeatsUnreliable: false,
    tempQueue: false,
    queueExpiryHeaders: false,
    prefetchCount: false,
    redeliveredHeader: false,
    errorClosesConnection: false,
    authErrorCloseMs: 2000,
    rejectsUnknownDestinationTypes: false,
    expiry: { header: "expires", absolute: true },
    nackRequeues: false,
    topicRestWildcard: ">",
  },
};

/**
 * The targets of one run: all of them, or those named in `VMC_BROKERS` (comma-separated kinds,
 * e.g. `VMC_BROKERS=embedded,rabbitmq`).
 */
export function brokerTargets(): BrokerTarget[] {
  const all = [embeddedTarget, rabbitMqTarget, activeMqTarget];
  const wanted = process.env.VMC_BROKERS?.split(",").map((s) => s.trim()).filter(Boolean);
  return wanted?.length ? all.filter((t) => wanted.includes(t.kind)) : all;
}
