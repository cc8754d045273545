/**
 * Runs examples/boinc-wrapper/boinc_wrapper.py (Debian's python3) against `vmc rpc` with a temp
 * $VMC_HOME and an embedded broker, and reads what it left: its stderr, its slot directory and
 * the JSON-RPC trace it recorded.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
export const wrapperScript = join(root, "examples", "boinc-wrapper", "boinc_wrapper.py");
export const python = "/usr/bin/python3";

export interface WrapperRun {
  child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
  /** Resolves with the first stderr line matching `pattern`; rejects after `timeoutMs` or at exit. */
  line(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** SIGKILLs the wrapper's process group (the wrapper and its `vmc rpc`). */
  kill(): Promise<void>;
}

export function startWrapper(args: string[], env: NodeJS.ProcessEnv): WrapperRun {
  const child = spawn(python, [wrapperScript, ...args], { detached: true, stdio: ["ignore", "ignore", "pipe"], env });
  let stderr = "";
  const listeners = new Set<() => void>();
  child.stderr!.on("data", (chunk: Buffer) => {
    if (stderr.length < 4_000_000) stderr += chunk.toString();
    for (const l of listeners) l();
  });
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? "?")));
  let gone = false;
  void exited.then(() => {
    gone = true;
    for (const l of listeners) l();
  });
  return {
    child,
    stderr: () => stderr,
    exited,
    line(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = stderr.split("\n").map((l) => l.match(pattern)).find((m) => m);
          if (hit) return done(() => resolve(hit));
          if (gone) done(() => reject(new Error(`wrapper exited before printing ${pattern}:\n${stderr}`)));
        };
        const done = (f: () => void) => {
          listeners.delete(check);
          clearTimeout(timer);
          f();
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no ${pattern} from the wrapper within ${timeoutMs} ms:\n${stderr}`))), timeoutMs);
        listeners.add(check);
        check();
      });
    },
    async kill() {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
      await exited;
    },
  };
}

/** Resolves with the exit status, or rejects (killing the wrapper) after `timeoutMs`. */
export async function exitWithin(run: WrapperRun, timeoutMs: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void run.kill();
      reject(new Error(`the wrapper did not finish within ${timeoutMs} ms:\n${run.stderr()}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([run.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface TraceEntry {
  t: number;
  dir: ">" | "<";
  msg: { id?: number; method?: string; params?: Record<string, unknown>; result?: unknown; error?: { code: number; message: string } };
}

/** A recorded exchange: each request with its answer, and every notification, in order. */
export class Trace {
  readonly entries: TraceEntry[];
  constructor(path: string) {
    this.entries = readFileSync(path, "utf8")
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as TraceEntry);
  }

  /** Requests (in order) with their answers. */
  calls(method?: string): Array<{ at: number; answeredAt: number; method: string; params: Record<string, unknown>; result?: unknown; error?: { code: number; message: string } }> {
    const answers = new Map<number, TraceEntry>();
    for (const e of this.entries) if (e.dir === "<" && e.msg.id !== undefined && !e.msg.method) answers.set(e.msg.id, e);
    return this.entries
      .filter((e) => e.dir === ">" && e.msg.method && e.msg.id !== undefined && (!method || e.msg.method === method))
      .map((e) => {
        const answer = answers.get(e.msg.id!);
        return { at: e.t, answeredAt: answer?.t ?? -1, method: e.msg.method!, params: e.msg.params ?? {}, result: answer?.msg.result, error: answer?.msg.error };
      });
  }

  notifications(method: string): Array<{ at: number; params: Record<string, unknown> }> {
    return this.entries.filter((e) => e.dir === "<" && e.msg.method === method && e.msg.id === undefined).map((e) => ({ at: e.t, params: e.msg.params ?? {} }));
  }

  /** `progress F CPU` lines the job printed, rebuilt from cmd.output by offset (delivery is at least once). */
  progress(cmdId: string): Array<{ at: number; fraction: number; cpu: number }> {
    const out: Array<{ at: number; fraction: number; cpu: number }> = [];
    let consumed = 0;
    let line = "";
    for (const n of this.notifications("cmd.output")) {
      if (n.params.id !== cmdId || n.params.stream !== "stdout") continue;
      const data = Buffer.from(String(n.params.data), "base64");
      const offset = Number(n.params.offset);
      if (offset > consumed || offset + data.length <= consumed) continue;
      const fresh = data.subarray(consumed - offset).toString();
      consumed = offset + data.length;
      const parts = (line + fresh).split("\n");
      line = parts.pop()!;
      for (const p of parts) {
        const m = p.match(/^progress (\S+) (\S+)$/);
        if (m) out.push({ at: n.at, fraction: Number(m[1]), cpu: Number(m[2]) });
      }
    }
    return out;
  }
}

/** What the job must write for `input`: each range with its prime count, then the total. */
export function expectedOutput(input: string): string {
  const lines: string[] = [];
  let total = 0;
  for (const line of input.split("\n").filter((l) => l.trim())) {
    const [lo, hi] = line.trim().split(/\s+/).map(Number) as [number, number];
    let count = 0;
    for (let k = Math.max(2, lo); k <= hi; k++) {
      let prime = true;
      for (let d = 2; d * d <= k; d++) if (k % d === 0) { prime = false; break; }
      if (prime) count++;
    }
    lines.push(`${lo} ${hi} ${count}`);
    total += count;
  }
  return `${lines.join("\n")}\ntotal ${total}\n`;
}
