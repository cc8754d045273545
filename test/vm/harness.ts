/**
 * What the VM tests share: the guest image (built once per machine into a temp-dir cache), a
 * controller (bus client + fleet) on an embedded broker, waiting for an agent's HELLO, running
 * shell snippets in a guest, and killing every QEMU a test started.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Destinations, PresenceMessage, type Hello } from "@vmc/protocol";
import { BusClient } from "@vmc/server/bus/client";
import { Fleet } from "@vmc/server/fleet/fleet";
import { loadOrCreateControllerKeys } from "@vmc/server/store/keys";
import type { BootImage } from "@vmc/server/hypervisors/driver";
import { executable } from "../harness/components";

export const qemuInstalled = executable("/usr/bin/qemu-system-x86_64") && executable("/usr/bin/qemu-img") && executable("/usr/bin/socat");

/** Built once per machine (the image builder caches by content), shared by every VM test file. */
export const IMAGE_HOME = process.env.VMC_TEST_IMAGE_HOME ?? join(tmpdir(), "vmc-test-image-home");

let imagePromise: Promise<BootImage> | undefined;
export function testImage(): Promise<BootImage> {
  imagePromise ??= import("@vmc/server/image/index").then(({ ensureGuestImage }) => ensureGuestImage({ home: IMAGE_HOME }));
  return imagePromise;
}

export function tempHome(prefix = "vmc-vm-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** SIGKILLs every QEMU whose pid file is under `home` (also the ones a test lost track of). */
export function killVms(home: string): void {
  const root = join(home, "vms");
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) {
    try {
      const pid = Number.parseInt(readFileSync(join(root, n, "qemu.pid"), "utf8"), 10);
      if (pid > 0) process.kill(pid, "SIGKILL");
    } catch {
      // not running
    }
  }
}

export function removeHome(home: string): void {
  killVms(home);
  rmSync(home, { recursive: true, force: true });
}

export interface Controller {
  bus: BusClient;
  fleet: Fleet;
  /** Resolves with the first HELLO from `agentId` sent at or after `sinceMs` (agent clock). */
  waitHello(agentId: string, timeoutMs: number, since?: number): Promise<Hello>;
  /** Runs `script` through /bin/sh in the guest; resolves with stdout, rejects when it fails. */
  sh(agentId: string, script: string, timeoutMs?: number): Promise<string>;
  close(): Promise<void>;
}

export async function startController(home: string, brokerUrl: string): Promise<Controller> {
  const keys = loadOrCreateControllerKeys(home);
  const bus = new BusClient({ brokerUrl, name: "vm-test", log: () => undefined });
  await bus.connect(15_000);
  const fleet = await Fleet.open({ bus, keys, log: () => undefined });
  const hellos: Hello[] = [];
  const waiters = new Set<() => void>();
  const sub = bus.subscribeJson(Destinations.presence, PresenceMessage, (hello) => {
    if (hello.type !== "HELLO") return;
    hellos.push(hello);
    if (hellos.length > 1000) hellos.shift();
    for (const w of waiters) w();
  });
  await sub.ready;
  return {
    bus,
    fleet,
    waitHello(agentId, timeoutMs, since = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = hellos.find((h) => h.agentId === agentId && h.sentAt >= since);
          if (!hit) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no HELLO from ${agentId} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async sh(agentId, script, timeoutMs = 30_000) {
      const run = await fleet.run({ target: agentId, argv: [script], shell: true, timeoutMs, expiresInMs: timeoutMs });
      const report = await run.done;
      const outcome = report.targets[0];
      if (!outcome || outcome.status !== "succeeded") {
        throw new Error(`'${script}' on ${agentId}: ${outcome?.status ?? "no target"} ${outcome?.reason ?? ""} ${outcome?.stderr.data.toString() ?? ""}`);
      }
      return outcome.stdout.data.toString();
    },
    async close() {
      sub.unsubscribe();
      await fleet.close();
      await bus.close();
    },
  };
}
