/** Runs a host tool for the image build, failing with its stderr. */
import { spawn } from "node:child_process";

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes written to the tool's stdin. */
  input?: Buffer;
  /** Called with each chunk of stdout and stderr as it comes (progress of a long build). */
  onOutput?: (chunk: Buffer) => void;
}

/** Runs `cmd args`, resolves with its stdout; rejects naming the command and its stderr when it fails. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => {
      out.push(d);
      opts.onOutput?.(d);
    });
    child.stderr.on("data", (d: Buffer) => {
      err.push(d);
      opts.onOutput?.(d);
    });
    child.on("error", (e) => reject(new Error(`${cmd}: ${e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out));
      const why = Buffer.concat(err).toString().trim().split("\n").slice(-5).join("\n");
      reject(new Error(`${cmd} ${args.join(" ")} failed (${signal ?? `exit ${code}`})${why ? `: ${why}` : ""}`));
    });
    child.stdin.end(opts.input);
  });
}
