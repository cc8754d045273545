/** Runs the QEMU tools and turns their failures into typed errors carrying QEMU's own message. */
import { spawn } from "node:child_process";
import { hypervisorFailed } from "../errors";

export const QEMU_SYSTEM = process.env.VMC_QEMU ?? "qemu-system-x86_64";
export const QEMU_IMG = process.env.VMC_QEMU_IMG ?? "qemu-img";

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (output bounded to 1 MiB per stream). */
export function run(command: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout = (stdout + d).slice(-1 << 20)));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-1 << 20)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs qemu-img; a non-zero exit becomes HypervisorFailed with its stderr. */
export async function qemuImg(args: string[], operation: string): Promise<string> {
  let r: RunResult;
  try {
    r = await run(QEMU_IMG, args);
  } catch (err) {
    throw hypervisorFailed("qemu", operation, `cannot run ${QEMU_IMG}: ${(err as Error).message}`);
  }
  if (r.code !== 0) throw hypervisorFailed("qemu", operation, (r.stderr || r.stdout).trim() || `qemu-img exited with ${r.code ?? r.signal}`);
  return r.stdout;
}
