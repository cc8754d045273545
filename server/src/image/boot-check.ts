/**
 * Boots an image once in QEMU (TCG) and measures it: time from QEMU start to the agent's first
 * connection to the broker address, QEMU's RSS then, and an ACPI power-down until QEMU exits.
 * A plain TCP listener stands in for the broker: the agent's first connection is the milestone.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { guestQemuArgs } from "./qemu";
import { Qmp } from "./qmp";
import { run } from "./run";
import type { GuestImage } from "./types";

export interface BootCheckResult {
  /** QEMU start → first TCP connection from the guest to 10.0.2.100:61613. */
  connectMs: number;
  /** QEMU's resident memory when the agent connected. */
  rssMiB: number;
  /** `system_powerdown` → QEMU exited. */
  shutdownMs?: number;
}

export async function bootCheck(image: GuestImage, opts: { onProgress?: (m: string) => void; timeoutMs?: number } = {}): Promise<BootCheckResult> {
  const progress = opts.onProgress ?? (() => {});
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const dir = mkdtempSync(join(tmpdir(), "vmc-bootcheck-"));
  const serialLog = join(dir, "console.log");
  let server: Server | undefined;
  let pid: number | undefined;
  try {
    const overlay = join(dir, "state.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.baseDisk, overlay]);
    let onConnect: () => void = () => {};
    const connected = new Promise<void>((r) => (onConnect = r));
    server = createServer((s) => {
      s.on("error", () => {});
      onConnect();
    });
    const port = await new Promise<number>((resolve) => server!.listen(0, "127.0.0.1", () => resolve((server!.address() as { port: number }).port)));
    const qmpSocket = join(dir, "qmp.sock");
    const args = guestQemuArgs(image, { overlay, brokerPort: port, qmpSocket, serialLog, vmcWords: `vmc_id=bootcheck vmc_broker=stomp://10.0.2.100:61613` });
    progress("booting the image in QEMU (TCG)");
    const t0 = performance.now();
    const qemu = spawn("qemu-system-x86_64", args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    pid = qemu.pid;
    let stderr = "";
    qemu.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((r) => qemu.on("exit", () => r()));
    const outcome = await Promise.race([
      connected.then(() => "connected" as const),
      exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs).unref()),
    ]);
    if (outcome !== "connected") {
      const tail = readTail(serialLog);
      throw new Error(`the agent did not connect (${outcome === "exited" ? `QEMU exited: ${stderr.trim()}` : `${timeoutMs} ms timeout`}); console:\n${tail}`);
    }
    const connectMs = Math.round(performance.now() - t0);
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    progress(`agent connected after ${connectMs} ms; powering down`);
    const qmp = await Qmp.open(qmpSocket);
    const t1 = performance.now();
    await qmp.execute("system_powerdown");
    const down = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 20_000).unref())]);
    qmp.close();
    const result: BootCheckResult = { connectMs, rssMiB: Math.round(rssKiB / 1024) };
    if (down) result.shutdownMs = Math.round(performance.now() - t1);
    return result;
  } finally {
    if (pid) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function readTail(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-20).join("\n");
  } catch {
    return "(no console output)";
  }
}
