/**
 * Guest side of the VM identity port (virtio-serial port `vmc.identity`; host side in
 * server/src/hypervisors/qemu/identity.ts). One JSON object per line each way:
 * - a template guest (kernel word `vmc_identity=wait`) writes `{"type":"WAITING"}` and blocks until
 *   the host writes `{"type":"IDENTITY","agentId","broker","controllerKey","hostTimeMs"}`: the VM
 *   was restored from the template's saved state and this is who it is now;
 * - after an in-place snapshot restore the host writes `{"type":"RESTORED","hostTimeMs"}`: the
 *   broker connection is stale and the clock is wrong.
 * The guest answers each with `{"type":"ACK"}` and sets its clock from `hostTimeMs`.
 * Written by the VM area (issue 4); the agent hooks it in its CLI.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { constants, existsSync, openSync, read, readFileSync, readdirSync, write } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export const IDENTITY_PORT_NAME = "vmc.identity";

export interface GuestIdentity {
  agentId: string;
  broker: string;
  controllerKey: string;
}

/** The port's device, or undefined when this machine has none (not a vmc VM, or an old image). */
export function findIdentityPort(): string | undefined {
  const byName = `/dev/virtio-ports/${IDENTITY_PORT_NAME}`;
  if (existsSync(byName)) return byName;
  try {
    for (const entry of readdirSync("/sys/class/virtio-ports")) {
      try {
        if (readFileSync(`/sys/class/virtio-ports/${entry}/name`, "utf8").trim() === IDENTITY_PORT_NAME && existsSync(`/dev/${entry}`)) return `/dev/${entry}`;
      } catch {
        // not readable
      }
    }
  } catch {
    // no virtio ports at all
  }
  return undefined;
}

/** True when the kernel command line (or VMC_IDENTITY=wait) says to wait for an identity. */
export function identityWaitRequested(): boolean {
  if (process.env.VMC_IDENTITY === "wait") return true;
  try {
    return readFileSync("/proc/cmdline", "utf8").split(/\s+/).includes("vmc_identity=wait");
  } catch {
    return false;
  }
}

type Line = { type?: unknown; agentId?: unknown; broker?: unknown; controllerKey?: unknown; hostTimeMs?: unknown };

/** virtio-console ports open once at a time, so one read-write descriptor serves both ways. */
let port: { path: string; fd: number } | undefined;
const lineListeners = new Set<(line: Line) => void>();

/**
 * A shell started while a template waits for its identity (so before the template is saved): it
 * reads one epoch second from its stdin and execs busybox `date`. A clone then sets its clock
 * without forking Node, which under TCG right after a restore costs hundreds of milliseconds.
 */
let clockHelper: { child: ChildProcess; done: Promise<void> } | undefined;

function startClockHelper(): void {
  if (clockHelper) return;
  try {
    // busybox date prints the time it set: that line, not the exit (SIGCHLD, waitpid), ends the wait.
    const child = spawn("/bin/sh", ["-c", 'read -r t && exec date -u -s "@$t"'], { stdio: ["pipe", "pipe", "ignore"] });
    const done = new Promise<void>((resolve) => {
      child.stdout?.once("data", () => resolve());
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    child.stdin?.on("error", () => undefined);
    clockHelper = { child, done };
  } catch {
    // no shell: setClock spawns date itself
  }
}

/** Sets the wall clock to `hostTimeMs` when it is off by a second or more (needs root, which the guest agent is). */
async function setClock(hostTimeMs: unknown): Promise<void> {
  const helper = clockHelper;
  clockHelper = undefined;
  if (typeof hostTimeMs !== "number" || !Number.isFinite(hostTimeMs) || Math.abs(Date.now() - hostTimeMs) < 1000) {
    helper?.child.kill("SIGKILL");
    return;
  }
  // Whole seconds, rounded down as before: the guest clock may lag the host by up to a second, never lead it.
  const seconds = Math.floor(hostTimeMs / 1000);
  if (helper?.child.stdin && helper.child.exitCode === null) {
    helper.child.stdin.end(`${seconds}\n`);
    await helper.done;
    return;
  }
  // busybox date: -u -s @SECONDS
  spawnSync("date", ["-u", "-s", `@${seconds}`], { stdio: "ignore" });
}

/** Writes a line; the write waits (off the main thread) while no host end is connected. */
function send(line: object): void {
  if (!port) return;
  write(port.fd, `${JSON.stringify(line)}\n`, () => undefined);
}

async function handle(text: string): Promise<void> {
  let line: Line;
  try {
    line = JSON.parse(text) as Line;
  } catch {
    return;
  }
  if (line.type === "IDENTITY" || line.type === "RESTORED") {
    await setClock(line.hostTimeMs);
    send({ type: "ACK" });
  }
  for (const l of lineListeners) l(line);
}

/** Reads lines for the agent's whole life. A read returns 0 (EOF) while no host end is connected: retry. */
async function readLines(fd: number): Promise<void> {
  const chunk = Buffer.alloc(4096);
  let buffer = "";
  for (;;) {
    let n = 0;
    try {
      n = await new Promise<number>((resolve, reject) => read(fd, chunk, 0, chunk.length, null, (err, bytes) => (err ? reject(err) : resolve(bytes))));
    } catch {
      n = 0;
    }
    if (n === 0) {
      await sleep(200);
      continue;
    }
    buffer = (buffer + chunk.subarray(0, n).toString("utf8")).slice(-65536);
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      await handle(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  }
}

async function openPort(): Promise<boolean> {
  if (port) return true;
  let path = findIdentityPort();
  // The device node can appear a moment after the module loads.
  for (let i = 0; !path && i < 50; i++) {
    await sleep(100);
    path = findIdentityPort();
  }
  if (!path) return false;
  port = { path, fd: openSync(path, constants.O_RDWR) };
  void readLines(port.fd);
  return true;
}

/**
 * Announces WAITING on the identity port and resolves with the identity the host writes.
 * Rejects when the machine has no identity port.
 */
export async function waitForIdentity(): Promise<GuestIdentity> {
  if (!(await openPort())) throw new Error(`no virtio-serial port named ${IDENTITY_PORT_NAME}`);
  return new Promise((resolve) => {
    const listener = (line: Line) => {
      if (line.type !== "IDENTITY") return;
      if (typeof line.agentId !== "string" || typeof line.broker !== "string" || typeof line.controllerKey !== "string") return;
      lineListeners.delete(listener);
      resolve({ agentId: line.agentId, broker: line.broker, controllerKey: line.controllerKey });
    };
    lineListeners.add(listener);
    startClockHelper();
    send({ type: "WAITING" });
  });
}

/**
 * Calls `cb` after each in-place snapshot restore the host announces (the clock is already set).
 * Returns an unsubscribe function. Does nothing on a machine without the port.
 */
export function onRestored(cb: (hostTimeMs: number) => void): () => void {
  const listener = (line: Line) => {
    if (line.type === "RESTORED") cb(typeof line.hostTimeMs === "number" ? line.hostTimeMs : Date.now());
  };
  lineListeners.add(listener);
  void openPort().catch(() => undefined);
  return () => lineListeners.delete(listener);
}
