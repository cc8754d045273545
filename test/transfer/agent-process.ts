/** Spawns the agent-side transfer module in its own process (agent/src/transfer/standalone.ts). */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { XferCancel, XferGrant } from "@vmc/protocol/bus";

const root = fileURLToPath(new URL("../..", import.meta.url));

export interface TransferAgentProcess {
  agentId: string;
  endpoint: { host: string; port: number };
  /** Delivers a grant or cancel as the bus would (a JSON line on the process's stdin). */
  deliver(agentId: string, message: XferGrant | XferCancel): Promise<void>;
  child: ChildProcess;
  stderr(): string;
  kill(signal?: NodeJS.Signals): void;
  exited: Promise<void>;
}

export async function startTransferAgent(opts: { agentId: string; publicKey: string; broker?: string; script?: string; args?: string[]; nodeArgs?: string[] }): Promise<TransferAgentProcess> {
  const script = opts.script ?? "agent/src/transfer/standalone.ts";
  const args = [...(opts.nodeArgs ?? []), "--import", "tsx", script, "--agent-id", opts.agentId, "--public-key", opts.publicKey, ...(opts.broker ? ["--broker", opts.broker] : []), ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ["pipe", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    if (err.length > 100_000) err = err.slice(-50_000);
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  // An endpoint that dies on its own is a bug under test: say why, or later failures only show the cascade.
  child.once("exit", (code) => {
    if (code) process.stderr.write(`transfer agent ${opts.agentId} exited with ${code}:\n${err.slice(-4000)}\n`);
  });
  const kill = (signal: NodeJS.Signals = "SIGKILL") => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
  };
  const endpoint = await new Promise<{ host: string; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`transfer agent did not start within 20 s: ${err}`)), 20_000);
    createInterface({ input: child.stdout! }).once("line", (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { dataEndpoint: { host: string; port: number } }).dataEndpoint);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`transfer agent exited (${code}): ${err}`));
    });
  });
  return {
    agentId: opts.agentId,
    endpoint,
    child,
    stderr: () => err,
    kill,
    exited,
    deliver: (_agentId, message) =>
      new Promise((resolve, reject) => child.stdin!.write(`${JSON.stringify(message)}\n`, (e) => (e ? reject(e) : resolve()))),
  };
}
