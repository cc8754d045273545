/**
 * Real components the tests need (RabbitMQ, QEMU, Chromium, ...). Outside CI a missing one
 * skips the test with the reason; with CI=true it fails the test, so CI never passes by skipping.
 */
import type { TestContext } from "node:test";
import { accessSync, constants } from "node:fs";

export const inCi = process.env.CI === "true";

/** True when an executable exists at `path`. */
export function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Call at the start of a test: returns true when the component is there. Otherwise skips the
 * test (outside CI) or throws (in CI), naming what is missing and how to get it.
 */
export function requireComponent(t: TestContext, name: string, present: boolean, hint = "run scripts/provision"): boolean {
  if (present) return true;
  const reason = `${name} is not installed (${hint})`;
  if (inCi) throw new Error(`${reason}; CI requires it`);
  t.skip(reason);
  return false;
}
