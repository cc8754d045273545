/**
 * `vmc run TARGET [options] -- CMD [ARG...]`: runs a command on every agent the target names,
 * streams their output, and accounts for every target at the end.
 */
import { fstatSync, readFileSync } from "node:fs";
import { isatty } from "node:tty";
import { once } from "node:events";
import { parseArgs } from "node:util";
import { constants } from "node:os";
import type { CommandRun, OutputStream, RunRequest } from "../fleet/command";
import type { RunReport } from "../fleet/outcome";
import { LinePrefixer, runJson, summaryTable } from "../fleet/render";
import { openFleetSession } from "../fleet/session";
import { parseTarget, TargetSyntaxError } from "../fleet/target";

const USAGE = `usage: vmc run TARGET [--timeout S] [--cwd DIR] [--env K=V]... [--stdin FILE|-] [--shell] [--json]
               [--expire S] [--tail BYTES] [--broker URL] -- CMD [ARG...]`;

const HELP = `${USAGE}

TARGET  agent ids and globs on them, label selectors, comma lists: 'vm.1.2.*', 'vm.*.7',
        'vm.**' (** crosses dots, * does not), 'role=worker', 'vm.1.*&role=db', 'vm.1,vm.2'
--timeout S   the agent kills the command (whole process group) after S seconds
--cwd DIR     working directory on the agent
--env K=V     environment variable for the command (repeatable)
--stdin FILE  send FILE as the command's stdin, up front (up to 12 MiB)
--stdin -     stream this process's stdin to the command as it comes (CMD_INPUT), then EOF.
              Without --stdin the same happens when stdin is a pipe, socket or terminal; a
              redirected file goes up front, /dev/null (or another device) means no stdin.
              With several targets every one gets the same input.
--shell       run CMD through /bin/sh -c (ARGs become $0, $1, ...)
--json        print one JSON document at the end instead of live output and a table
--expire S    how long the command may wait for an agent that is offline or unknown (default 30)
--tail BYTES  bytes of each stream's tail kept per target for --json (default 1 MiB, less for many targets)

Exit status: 0 when every target succeeded. With one target: its exit code, 128+N for signal N,
124 when it timed out, 130 when cancelled, 1 otherwise. With several targets: 1 when any did
not succeed. 2: usage error; 3: no agent matched the target.`;

const MAX_STDIN = 12 * 1024 * 1024;

interface Parsed {
  brokerUrl?: string;
  json: boolean;
  request: RunRequest;
  /** Where the command's stdin comes from when no FILE was given: `-` (asked for) or our stdin if it is a stream. */
  ourStdin: "explicit" | "auto" | "none";
}

function fail(message: string): never {
  throw new UsageError(message);
}

class UsageError extends Error {}

function seconds(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} takes a positive number of seconds, not '${text}'`);
  return Math.round(n * 1000);
}

export function parseRunArgs(argv: string[]): Parsed | "help" {
  const dashes = argv.indexOf("--");
  const before = dashes >= 0 ? argv.slice(0, dashes) : argv;
  const { values, positionals } = parseArgs({
    args: before,
    options: {
      timeout: { type: "string" },
      cwd: { type: "string" },
      env: { type: "string", multiple: true },
      stdin: { type: "string" },
      shell: { type: "boolean" },
      json: { type: "boolean" },
      expire: { type: "string" },
      tail: { type: "string" },
      broker: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) return "help";
  const [target, ...rest] = positionals;
  const command = dashes >= 0 ? [...rest, ...argv.slice(dashes + 1)] : rest;
  if (!target) fail("missing TARGET");
  if (command.length === 0) fail("missing the command to run (put it after --)");
  try {
    parseTarget(target);
  } catch (e) {
    if (e instanceof TargetSyntaxError) fail(e.message);
    throw e;
  }
  const env: Record<string, string> = {};
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) fail(`--env takes K=V, not '${pair}'`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  let stdin: Buffer | undefined;
  if (values.stdin !== undefined && values.stdin !== "-") {
    stdin = readFileSync(values.stdin);
    if (stdin.length > MAX_STDIN) fail(`--stdin: ${stdin.length} bytes is more than the ${MAX_STDIN} bytes a command can take up front (use --stdin - < FILE to stream it)`);
  }
  let tailBytes: number | undefined;
  if (values.tail !== undefined) {
    tailBytes = Number(values.tail);
    if (!Number.isInteger(tailBytes) || tailBytes < 0 || tailBytes > 16 * 1024 * 1024) fail(`--tail takes a byte count up to 16 MiB, not '${values.tail}'`);
  }
  const request: RunRequest = {
    target,
    argv: command,
    shell: values.shell ?? false,
    env,
    ...(values.cwd !== undefined ? { cwd: values.cwd } : {}),
    ...(stdin ? { stdin } : {}),
    ...(values.timeout !== undefined ? { timeoutMs: seconds("timeout", values.timeout) } : {}),
    ...(values.expire !== undefined ? { expiresInMs: seconds("expire", values.expire) } : {}),
    ...(tailBytes !== undefined ? { tailBytes } : {}),
    // --json prints only the tails, so the agents need not stream every byte here.
    stream: !values.json,
  };
  const ourStdin = stdin ? "none" : values.stdin === "-" ? "explicit" : "auto";
  return { brokerUrl: values.broker, json: values.json ?? false, request, ourStdin };
}

/** Raw bytes per CMD_INPUT (base64 keeps it under the message's 1 MiB data limit). */
const INPUT_CHUNK = 512 * 1024;

/**
 * Decides how our own stdin reaches the command: up front (a regular file small enough),
 * streamed (a pipe, socket or terminal; anything but a regular file with `--stdin -`), or not at all.
 */
export function stdinPlan(ourStdin: Parsed["ourStdin"], fd = 0): { upFront: Buffer } | "stream" | "none" {
  if (ourStdin === "none") return "none";
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    return "none"; // closed
  }
  if (st.isFile()) return st.size <= MAX_STDIN ? { upFront: readFileSync(fd) } : "stream";
  if (ourStdin === "auto" && st.isCharacterDevice() && !isatty(fd)) return "none"; // /dev/null and friends
  return "stream";
}

/** Sends our stdin to the run's targets as CMD_INPUT, in order, then EOF; stops when stdin is destroyed. */
async function pumpStdin(run: CommandRun): Promise<void> {
  try {
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      for (let at = 0; at < chunk.length; at += INPUT_CHUNK) await run.input(chunk.subarray(at, at + INPUT_CHUNK), false);
    }
    await run.input(new Uint8Array(0), true);
  } catch (e) {
    // Destroyed because the run ended, or the send failed (the run's accounting reports why).
    if ((e as NodeJS.ErrnoException).code !== "ERR_STREAM_PREMATURE_CLOSE") process.stderr.write(`vmc run: stdin: ${e instanceof Error ? e.message : String(e)}\n`);
  }
}

const draining: Partial<Record<OutputStream, Promise<void>>> = {};
/** Set when our reader went away (EPIPE): output is discarded from then on. */
const closed: Partial<Record<OutputStream, boolean>> = {};

/** Writes to our stdout/stderr, returning a promise while the pipe is full (backpressure to the broker). */
function writer(stream: OutputStream, data: Buffer): void | Promise<void> {
  if (closed[stream]) return;
  const out = stream === "stdout" ? process.stdout : process.stderr;
  if (out.write(data) && !draining[stream]) return;
  return (draining[stream] ??= once(out, "drain").then(() => void delete draining[stream]));
}

export function exitStatus(report: RunReport): number {
  if (report.ok) return 0;
  if (report.targets.length !== 1) return 1;
  const t = report.targets[0]!;
  if (t.status === "timedOut") return 124;
  if (t.status === "cancelled") return 130;
  if (t.status === "failed" && t.agentStatus === "exited") {
    if (t.signal) return 128 + ((constants.signals as Record<string, number>)[t.signal] ?? 0);
    if (t.exitCode !== null && t.exitCode > 0 && t.exitCode < 256) return t.exitCode;
  }
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  let parsed: Parsed | "help";
  try {
    parsed = parseRunArgs(argv);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`vmc run: ${(e as Error).message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (parsed === "help") {
    console.log(HELP);
    return 0;
  }
  const { request, json } = parsed;
  const plan = stdinPlan(parsed.ourStdin);
  if (plan === "stream") request.stdinStream = true;
  else if (plan !== "none") request.stdin = plan.upFront;

  let run: CommandRun | undefined;
  let interrupted = 0;
  const onSigint = () => {
    interrupted++;
    if (interrupted > 1) process.exit(130);
    if (run) {
      process.stderr.write(`\nvmc run: cancelling on ${run.agentIds.length} target(s) (Ctrl-C again to quit at once)\n`);
      run.cancel();
    }
  };
  process.on("SIGINT", onSigint);
  // `vmc run ... | head`: once our reader is gone, cancel the command instead of crashing on EPIPE.
  const onPipeError = (stream: OutputStream) => (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") throw e;
    if (closed[stream]) return;
    closed[stream] = true;
    run?.cancel();
  };
  const onStdoutError = onPipeError("stdout");
  const onStderrError = onPipeError("stderr");
  process.stdout.on("error", onStdoutError);
  process.stderr.on("error", onStderrError);
  const session = await openFleetSession({ brokerUrl: parsed.brokerUrl, name: "vmc-run" });
  try {
    let several = false;
    const prefixer = new LinePrefixer(writer);
    run = await session.fleet.run(request, {
      onExpanded: (ids) => (several = ids.length > 1),
      onOutput: json ? undefined : (agentId, stream, data) => (several ? prefixer.push(agentId, stream, data) : writer(stream, data)),
      onOutputLost: (agentId, stream, from, to) => {
        process.stderr.write(`vmc run: ${agentId}: ${to - from} bytes of ${stream} (offsets ${from}-${to}) were lost in transit\n`);
      },
      onTargetDone: (outcome) => {
        if (several && !json) prefixer.flush(outcome.agentId);
      },
    });
    if (interrupted) run.cancel();
    if (plan === "stream") void pumpStdin(run);
    if (run.agentIds.length === 0) {
      const known = session.fleet.agents().length;
      if (json) process.stdout.write(`${JSON.stringify(runJson(await run.done), null, 2)}\n`);
      console.error(`vmc run: no agent matches '${request.target}' (${known} agent${known === 1 ? "" : "s"} known; see vmc agents)`);
      return 3;
    }
    const report = await run.done;
    if (json) process.stdout.write(`${JSON.stringify(runJson(report), null, 2)}\n`);
    else if (several || !report.ok) process.stderr.write(summaryTable(report));
    const lost = report.targets.reduce((n, t) => n + t.outputLostBytes, 0);
    if (lost > 0 && !json) {
      process.stderr.write(`vmc run: output is incomplete: ${lost} bytes were lost in transit\n`);
      return exitStatus(report) || 1;
    }
    return exitStatus(report);
  } finally {
    // Stop reading (a terminal or an open pipe would keep this process alive).
    if (plan === "stream") process.stdin.destroy();
    process.off("SIGINT", onSigint);
    process.stdout.off("error", onStdoutError);
    process.stderr.off("error", onStderrError);
    await session.close();
  }
}
