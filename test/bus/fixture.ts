/**
 * One conformance suite, many brokers: `forEachBroker` declares a `describe` per broker target
 * with one broker process for the whole file (RabbitMQ takes seconds to start), unique
 * destination names per test, and every connection a test opens closed after it.
 */
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, test, type TestContext } from "node:test";
import { brokerTargets, type BrokerQuirks, type BrokerTarget, type RunningBroker } from "../harness/brokers";
import { requireComponent } from "../harness/components";
import { openSession, RawStomp, type StompSession } from "./raw-stomp";

export interface BrokerFixture {
  target: BrokerTarget;
  quirks: BrokerQuirks;
  broker(): RunningBroker;
  /** False (and the test skipped, or failed in CI) when the broker is not installed. */
  present(t: TestContext): boolean;
  /** A unique destination name under `prefix` (`/queue/`, `/topic/`). */
  dest(prefix: "/queue/" | "/topic/", name: string): string;
  /** A CONNECTed frame-level session, closed after the test. */
  session(headers?: Record<string, string>, command?: "CONNECT" | "STOMP"): Promise<StompSession>;
  /** A bare TCP connection (nothing sent yet), closed after the test. */
  raw(): Promise<RawStomp>;
  /** Registers a cleanup that runs after the current test. */
  defer(fn: () => unknown): void;
}

export function forEachBroker(title: string, body: (fx: BrokerFixture) => void): void {
  // Every broker of the file starts at once (RabbitMQ takes seconds): the later suites' brokers
  // boot while the first suite runs. Each suite's `before` waits for its own.
  const starting = new Map<BrokerTarget, Promise<RunningBroker>>();
  for (const target of brokerTargets()) {
    if (!target.installed()) continue;
    const p = target.start();
    p.catch(() => undefined);
    starting.set(target, p);
  }
  for (const target of brokerTargets()) {
    describe(`${title} — ${target.name}`, () => {
      let running: RunningBroker | undefined;
      let cleanups: Array<() => unknown> = [];
      before(async () => {
        const p = starting.get(target);
        if (p) running = await p;
      });
      after(async () => {
        const p = starting.get(target);
        const broker = p ? await p.catch(() => undefined) : undefined;
        await broker?.stop();
      });
      afterEach(async () => {
        const list = cleanups.reverse();
        cleanups = [];
        for (const c of list) {
          try {
            await c();
          } catch {
            // best effort: the next cleanup must still run
          }
        }
      });
      const fx: BrokerFixture = {
        target,
        quirks: target.quirks,
        broker: () => {
          if (!running) throw new Error(`${target.name} is not running`);
          return running;
        },
        present: (t) => requireComponent(t, target.name, target.installed(), target.hint),
        dest: (prefix, name) => `${prefix}conf.${name}.${randomUUID().slice(0, 8)}`,
        async session(headers, command) {
          const b = fx.broker();
          const s = await openSession(b.host, b.port, headers, command);
          cleanups.push(() => s.client.close());
          return s;
        },
        async raw() {
          const b = fx.broker();
          const c = await RawStomp.open(b.host, b.port);
          cleanups.push(() => c.close());
          return c;
        },
        defer: (fn) => cleanups.push(fn),
      };
      body(fx);
    });
  }
}

/**
 * `test` where the broker has the feature; where it lacks it (a documented difference, listed in
 * docs/CONFORMANCE.md) the case is not declared at all, so CI never counts a skip.
 */
export function testIf(supported: boolean): typeof test {
  return supported ? test : (((): void => undefined) as unknown as typeof test);
}
