/**
 * The server side of the `fs.*` methods (the editor's `vmc:` file system): each operation is a
 * small POSIX shell script run on the guest's agent through the fleet, so it works with busybox
 * in our guests and with coreutils on real hosts alike. File contents travel as the command's
 * stdin/stdout (bytes, no encoding), bounded by the size checked first.
 */
import { VmcError, VmcErrorCodes } from "@vmc/protocol/errors";
import type {
  FsDeleteRequest,
  FsMkdirRequest,
  FsReadDirRequest,
  FsReadFileRequest,
  FsRenameRequest,
  FsStatRequest,
  FsWriteFileRequest,
  GuestFileStat,
} from "@vmc/protocol/rpc";
import type { z } from "zod";
import type { CommandRun } from "../fleet/command";
import type { Fleet } from "../fleet/fleet";

/** What one guest command gave back. */
export interface GuestExecResult {
  status: string;
  exitCode: number | null;
  stdout: Buffer;
  stderr: Buffer;
  reason?: string;
}

/** Runs `argv` (no shell) on exactly one agent and waits for it to end. */
export type GuestExec = (agentId: string, argv: string[], options: { stdin?: Uint8Array; outputBytes: number; timeoutMs: number }) => Promise<GuestExecResult>;

export interface GuestFsOptions {
  exec: GuestExec;
  /** Maps the `target` of a request (agent id or VM name) to an agent id; default: as given. */
  agentOf?(target: string): string;
  /** Bound on each guest command (default 60 000 ms). */
  timeoutMs?: number;
}

const DEFAULT_MAX_READ = 16 * 1024 * 1024;

// Exit codes the scripts use to say what went wrong, so no stderr text is parsed.
const NOT_FOUND = 66;
const EXISTS = 67;
const NOT_DIR = 68;
const IS_DIR = 69;

/** `$1` missing (and not a dangling symlink) → NOT_FOUND; then the followed stat, else the link's own. */
const STAT_SCRIPT = `[ -e "$1" ] || [ -L "$1" ] || exit ${NOT_FOUND}
stat -L -c '%f %s %Y' -- "$1" 2>/dev/null || stat -c '%f %s %Y' -- "$1"`;

const READDIR_SCRIPT = `[ -e "$1" ] || exit ${NOT_FOUND}
[ -d "$1" ] || exit ${NOT_DIR}
cd -- "$1" || exit 1
for f in * .[!.]* ..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -L "$f" ]; then t=l; elif [ -d "$f" ]; then t=d; elif [ -f "$f" ]; then t=f; else t=o; fi
  printf '%s/%s\\000' "$t" "$f"
done`;

const READ_SCRIPT = `[ -e "$1" ] || exit ${NOT_FOUND}
[ -d "$1" ] && exit ${IS_DIR}
size=$(stat -L -c %s -- "$1") || exit 1
[ "$size" -le "$2" ] || { echo "$size"; exit 70; }
exec cat -- "$1"`;

// $2 = create (1/0), $3 = overwrite (1/0)
const WRITE_SCRIPT = `if [ -e "$1" ]; then
  [ -d "$1" ] && exit ${IS_DIR}
  [ "$3" = 1 ] || exit ${EXISTS}
else
  [ "$2" = 1 ] || exit ${NOT_FOUND}
  [ -d "$(dirname -- "$1")" ] || exit ${NOT_FOUND}
fi
exec cat > "$1"`;

const MKDIR_SCRIPT = `[ -e "$1" ] && exit ${EXISTS}
[ -d "$(dirname -- "$1")" ] || exit ${NOT_FOUND}
exec mkdir -- "$1"`;

// $2 = recursive (1/0)
const DELETE_SCRIPT = `[ -e "$1" ] || [ -L "$1" ] || exit ${NOT_FOUND}
if [ -d "$1" ] && [ ! -L "$1" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$1"; else exec rmdir -- "$1"; fi
fi
exec rm -f -- "$1"`;

// $3 = overwrite (1/0); a directory in the way is replaced, never moved into.
const RENAME_SCRIPT = `[ -e "$1" ] || [ -L "$1" ] || exit ${NOT_FOUND}
[ -d "$(dirname -- "$2")" ] || exit ${NOT_FOUND}
if [ -e "$2" ] || [ -L "$2" ]; then
  [ "$3" = 1 ] || exit ${EXISTS}
  rm -rf -- "$2" || exit 1
fi
exec mv -f -- "$1" "$2"`;

type Params<T extends { params: z.ZodTypeAny }> = z.infer<T["params"]>;

/** The `fs.*` operations on guests; the rpc endpoint registers one method per operation. */
export class GuestFs {
  private readonly timeoutMs: number;

  constructor(private readonly options: GuestFsOptions) {
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  async stat(p: Params<typeof FsStatRequest>): Promise<GuestFileStat> {
    const out = await this.script(p.target, p.path, STAT_SCRIPT, []);
    const [modeHex, size, mtime] = out.stdout.toString("utf8").trim().split(/\s+/);
    const rawMode = Number.parseInt(modeHex ?? "", 16);
    if (!Number.isFinite(rawMode)) throw failed(p.path, "stat", "unexpected stat output");
    return { type: typeOfMode(rawMode), size: Number(size) || 0, mtime: (Number(mtime) || 0) * 1000, mode: rawMode & 0o7777 };
  }

  async readDir(p: Params<typeof FsReadDirRequest>): Promise<Array<{ name: string; type: GuestFileStat["type"] }>> {
    const out = await this.script(p.target, p.path, READDIR_SCRIPT, [], 16 * 1024 * 1024);
    const entries: Array<{ name: string; type: GuestFileStat["type"] }> = [];
    for (const record of out.stdout.toString("utf8").split("\0")) {
      const slash = record.indexOf("/");
      if (slash !== 1) continue;
      const name = record.slice(2);
      if (name) entries.push({ name, type: TYPE_LETTERS[record[0] ?? ""] ?? "other" });
    }
    return entries.sort((a, b) => a.name.localeCompare(b.name));
  }

  async readFile(p: Params<typeof FsReadFileRequest>): Promise<{ data: string; size: number }> {
    const maxBytes = p.maxBytes ?? DEFAULT_MAX_READ;
    const out = await this.script(p.target, p.path, READ_SCRIPT, [String(maxBytes)], maxBytes + 1024, { 70: "tooLarge" });
    return { data: out.stdout.toString("base64"), size: out.stdout.length };
  }

  async writeFile(p: Params<typeof FsWriteFileRequest>): Promise<null> {
    const data = Buffer.from(p.data, "base64");
    await this.script(p.target, p.path, WRITE_SCRIPT, [flag(p.create ?? true), flag(p.overwrite ?? true)], 64 * 1024, {}, data);
    return null;
  }

  async mkdir(p: Params<typeof FsMkdirRequest>): Promise<null> {
    await this.script(p.target, p.path, MKDIR_SCRIPT, []);
    return null;
  }

  async delete(p: Params<typeof FsDeleteRequest>): Promise<null> {
    await this.script(p.target, p.path, DELETE_SCRIPT, [flag(p.recursive ?? false)]);
    return null;
  }

  async rename(p: Params<typeof FsRenameRequest>): Promise<null> {
    if (!p.from.startsWith("/") || !p.to.startsWith("/")) {
      throw new VmcError(VmcErrorCodes.UnknownPath, "a guest path is absolute", { from: p.from, to: p.to });
    }
    await this.script(p.target, p.from, RENAME_SCRIPT, [p.to, flag(p.overwrite ?? false)]);
    return null;
  }

  private async script(
    target: string,
    path: string,
    script: string,
    args: string[],
    outputBytes = 64 * 1024,
    extra: Record<number, "tooLarge"> = {},
    stdin?: Uint8Array,
  ): Promise<GuestExecResult> {
    const agentId = this.options.agentOf ? this.options.agentOf(target) : target;
    const argv = ["/bin/sh", "-c", script, "vmc-fs", path, ...args];
    const result = await this.options.exec(agentId, argv, { stdin: stdin ?? new Uint8Array(), outputBytes, timeoutMs: this.timeoutMs });
    if (result.status === "unreachable") {
      throw new VmcError(VmcErrorCodes.AgentUnreachable, `agent ${agentId} is unreachable${result.reason ? `: ${result.reason}` : ""}`, { agentId });
    }
    if (result.exitCode === 0 && result.status === "succeeded") return result;
    const code = result.exitCode ?? -1;
    if (extra[code] === "tooLarge") {
      const size = Number(result.stdout.toString("utf8").trim());
      throw new VmcError(VmcErrorCodes.TooLarge, `${path} is ${size} bytes, more than allowed`, { path, size });
    }
    switch (code) {
      case NOT_FOUND:
        throw new VmcError(VmcErrorCodes.UnknownPath, `no such file or directory: ${path}`, { path, agentId });
      case EXISTS:
        throw new VmcError(VmcErrorCodes.AlreadyExists, `already exists: ${args[0]?.startsWith("/") ? args[0] : path}`, { path, agentId });
      case NOT_DIR:
        throw new VmcError(VmcErrorCodes.UnknownPath, `not a directory: ${path}`, { path, agentId, notADirectory: true });
      case IS_DIR:
        throw new VmcError(VmcErrorCodes.InvalidState, `is a directory: ${path}`, { path, agentId, isDirectory: true });
    }
    const stderr = result.stderr.toString("utf8").trim().slice(-500);
    throw failed(path, `${result.status}${result.exitCode !== null ? ` (exit ${result.exitCode})` : ""}`, stderr || result.reason || "", agentId);
  }
}

const TYPE_LETTERS: Record<string, GuestFileStat["type"]> = { d: "directory", f: "file", l: "symlink", o: "other" };

function typeOfMode(mode: number): GuestFileStat["type"] {
  switch (mode & 0o170000) {
    case 0o040000:
      return "directory";
    case 0o100000:
      return "file";
    case 0o120000:
      return "symlink";
    default:
      return "other";
  }
}

function flag(value: boolean): string {
  return value ? "1" : "0";
}

function failed(path: string, what: string, detail: string, agentId?: string): VmcError {
  const noPermission = /permission denied|read-only file system/i.test(detail);
  return new VmcError(VmcErrorCodes.InvalidState, `${path}: ${what}${detail ? `: ${detail}` : ""}`, { path, agentId, noPermissions: noPermission });
}

/**
 * A {@link GuestExec} over the controller's fleet (one literal agent id per call). Output is
 * collected from the stream (in order, each byte once) rather than the kept tail, which the agent
 * caps below what `fs.readFile` allows; more than `outputBytes` fails the call.
 */
export function fleetGuestExec(fleet: Fleet): GuestExec {
  return async (agentId, argv, options) => {
    const chunks: Record<"stdout" | "stderr", Buffer[]> = { stdout: [], stderr: [] };
    let bytes = 0;
    let problem: string | undefined;
    let run: CommandRun | undefined;
    run = await fleet.run(
      { target: agentId, argv, stdin: options.stdin, stream: true, timeoutMs: options.timeoutMs, expiresInMs: 5000, tailBytes: 4096 },
      {
        onOutput(_agent, stream, data) {
          bytes += data.length;
          if (bytes > options.outputBytes) {
            problem ??= `more than ${options.outputBytes} bytes of output`;
            run?.cancel();
            return;
          }
          chunks[stream].push(data);
        },
        onOutputLost(_agent, stream, from, to) {
          problem ??= `${stream} bytes ${from}..${to} were lost in transit`;
        },
      },
    );
    if (problem) run.cancel();
    const report = await run.done;
    const outcome = report.targets[0];
    if (!outcome) return { status: "unreachable", exitCode: null, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), reason: `no agent ${agentId}` };
    if (problem) return { status: "failed", exitCode: null, stdout: Buffer.alloc(0), stderr: Buffer.from(problem), reason: problem };
    return { status: outcome.status, exitCode: outcome.exitCode, stdout: Buffer.concat(chunks.stdout), stderr: Buffer.concat(chunks.stderr), reason: outcome.reason };
  };
}

/** The `fs.*` service over a fleet, as the rpc endpoint registers it. */
export function createGuestFs(fleet: Fleet, agentOf?: (target: string) => string): GuestFs {
  return new GuestFs({ exec: fleetGuestExec(fleet), agentOf });
}
