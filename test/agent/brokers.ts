/**
 * The brokers the agent and bus-client suites run against: the embedded broker (a real
 * `vmc broker` process) and a private RabbitMQ node. `forEachBroker` declares one `describe`
 * per broker; the broker starts in `before` and is killed in `after`.
 */
import { after, before, describe, type TestContext } from "node:test";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker } from "../harness/embedded-broker";
import { rabbitMqInstalled, startRabbitMq } from "../harness/rabbitmq";

export interface TestBroker {
  kind: "embedded" | "rabbitmq";
  url: string;
  host: string;
  port: number;
  restart(): Promise<void>;
  stop(): Promise<void>;
  log(): string;
}

export interface BrokerRef {
  /** Set once `before` has run; undefined when the broker is missing outside CI. */
  current: TestBroker | undefined;
  /** For use at the start of each test: the broker, or skips (locally) / fails (CI) when missing. */
  need(t: TestContext): TestBroker | undefined;
}

const selected = (process.env.VMC_TEST_BROKERS ?? "embedded,rabbitmq").split(",");

export function forEachBroker(title: string, body: (broker: BrokerRef) => void): void {
  for (const kind of ["embedded", "rabbitmq"] as const) {
    if (!selected.includes(kind)) continue;
    describe(`${title} [${kind}]`, () => {
      const ref: BrokerRef = {
        current: undefined,
        need(t) {
          if (kind === "rabbitmq" && !requireComponent(t, "RabbitMQ", rabbitMqInstalled())) return undefined;
          if (!ref.current) throw new Error(`${kind} broker did not start`);
          return ref.current;
        },
      };
      before(async () => {
        if (kind === "rabbitmq") {
          if (!rabbitMqInstalled()) return;
          const r = await startRabbitMq();
          ref.current = { kind, url: r.url, host: r.host, port: r.port, restart: r.restart, stop: r.stop, log: r.log };
        } else {
          const b = await startEmbeddedBroker();
          ref.current = { kind, url: b.url, host: b.host, port: b.port, restart: b.restart, stop: b.stop, log: b.log };
        }
      });
      after(async () => {
        await ref.current?.stop();
      });
      body(ref);
    });
  }
}

/** Resolves with the first value `probe` returns that is not undefined; polls every 20 ms; fails after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
