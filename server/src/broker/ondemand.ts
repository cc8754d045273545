/**
 * Starts the embedded broker on demand: when the configured broker is the default address and
 * nothing answers a STOMP CONNECT there, spawn `vmc broker` detached (it outlives the caller),
 * with its journal in `$VMC_HOME/broker`, its log in `$VMC_HOME/broker/broker.log` and its pid
 * in `$VMC_HOME/broker/broker.pid`. Concurrent callers race safely: the loser's broker fails to
 * bind and exits, and every caller waits until the address answers.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_BROKER, parseBrokerUrl, vmcHome } from "../config";
import { stompResponds } from "./probe";

export interface EnsureBrokerOptions {
  /** The address that may be auto-started (default DEFAULT_BROKER; tests inject a free port). */
  defaultUrl?: string;
  /** `$VMC_HOME` (default from the environment). */
  home?: string;
  /** Path of the dist/vmc.mjs bundle (default: found from the running module or argv). */
  bundle?: string;
  /** How long to wait for the broker to answer (default 15 s). */
  timeoutMs?: number;
}

function ownsPidFile(dir: string, pid: number): boolean {
  try {
    return readFileSync(join(dir, "broker.pid"), "utf8").trim() === String(pid);
  } catch {
    return false;
  }
}

/** The dist/vmc.mjs bundle to run `vmc broker` with. */
export function vmcBundlePath(): string {
  // import.meta.url is absent when this code is bundled as CommonJS (the extension).
  const self = typeof import.meta.url === "string" ? fileURLToPath(import.meta.url) : undefined;
  if (self?.endsWith(".mjs")) return self;
  const arg = process.argv[1];
  if (arg && /vmc\.mjs$/.test(arg) && existsSync(arg)) return resolve(arg);
  if (self) return resolve(dirname(self), "../../../dist/vmc.mjs");
  return resolve(process.cwd(), "dist/vmc.mjs");
}

function sameAddress(a: string, b: string): boolean {
  try {
    const x = parseBrokerUrl(a);
    const y = parseBrokerUrl(b);
    return x.host === y.host && x.port === y.port;
  } catch {
    return false;
  }
}

/**
 * Resolves `{ started: true }` when this call spawned the broker that now answers,
 * `{ started: false }` when one was already answering (or the URL's host:port is not the
 * default one; credentials in the URL do not matter).
 * Rejects when the default broker cannot be brought up within the timeout.
 */
export async function ensureBroker(url: string, opts: EnsureBrokerOptions = {}): Promise<{ started: boolean }> {
  const defaultUrl = opts.defaultUrl ?? DEFAULT_BROKER;
  if (!sameAddress(url, defaultUrl)) return { started: false };
  const { host, port } = parseBrokerUrl(url);
  if (await stompResponds(host, port)) return { started: false };
  const dir = join(opts.home ?? vmcHome(), "broker");
  mkdirSync(dir, { recursive: true });
  const timeoutMs = opts.timeoutMs ?? 15_000;
  // One spawner at a time per $VMC_HOME: the others wait for the address to answer.
  const lock = join(dir, "spawn.lock");
  let pid = -1;
  let exited = false;
  if (takeLock(lock, timeoutMs)) {
    try {
      if (await stompResponds(host, port)) return { started: false };
      const logFd = openSync(join(dir, "broker.log"), "a");
      try {
        const child = spawn(process.execPath, [opts.bundle ?? vmcBundlePath(), "broker", "--host", host, "--port", String(port), "--data", dir], {
          detached: true,
          stdio: ["ignore", logFd, logFd],
        });
        pid = child.pid ?? -1;
        child.on("exit", () => (exited = true));
        child.on("error", () => (exited = true));
        child.unref();
      } finally {
        closeSync(logFd);
      }
      return await waitAnswer(url, host, port, dir, timeoutMs, () => !exited && ownsPidFile(dir, pid));
    } finally {
      rmSync(lock, { force: true });
    }
  }
  return waitAnswer(url, host, port, dir, timeoutMs, () => false);
}

/** Creates the lock file; takes over one older than `staleMs` (its holder died). */
function takeLock(path: string, staleMs: number): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: "wx" });
      return true;
    } catch {
      try {
        if (Date.now() - statSync(path).mtimeMs < staleMs) return false;
        rmSync(path, { force: true });
      } catch {
        // vanished meanwhile: retry
      }
    }
  }
  return false;
}

async function waitAnswer(url: string, host: string, port: number, dir: string, timeoutMs: number, ours: () => boolean): Promise<{ started: boolean }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await stompResponds(host, port, 500)) return { started: ours() };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the embedded broker did not answer at ${url} within ${timeoutMs} ms (log: ${join(dir, "broker.log")})`);
}
