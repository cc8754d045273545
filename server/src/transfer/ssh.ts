/**
 * Agentless transfers: the same put/get over SSH/SFTP (node-ssh) for a machine with no agent.
 * The host-side rules are the ones of the data channel: names from the remote side are confined
 * (paths.ts), symlinks are created only when they stay inside the tree and never written
 * through, files land under a temporary name and are renamed when complete, declared sizes and
 * counts are enforced, free disk space is checked first. Integrity in transit is SSH's own MAC
 * (SFTP has no content digest); sizes are checked after each file.
 *
 * Resume: a complete file (same size and mtime) is skipped; a partial file continues from its
 * size less the bytes a parallel copy may have left unwritten, once the SHA-256 of that prefix
 * matches on both ends (the remote end hashes with `head -c N | sha256sum`; without a shell
 * or coreutils there, the file is copied again from the start).
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, rename, stat, statfs, symlink, truncate, unlink, utimes, writeFile, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import type { NodeSSH } from "node-ssh";
import { TransferError } from "./errors";
import { printable, safeComponents, safeName, symlinkStaysInside } from "./paths";
import { ProgressMeter, type ProgressListener } from "./progress";
import { DEFAULT_RECEIVE_LIMITS, partialName, type ReceiveLimits } from "./receiver";
import { planTree } from "./walk";

export interface SshTarget {
  host: string;
  port?: number;
  username: string;
  /** Path of a private key file. */
  privateKeyPath?: string;
  password?: string;
  /** Accept any host key (tests, first contact). Default true: agentless machines are usually fresh VMs. */
  readyTimeoutMs?: number;
}

/** `user@host[:port]` → parts. */
export function parseSshSpec(spec: string): { username: string; host: string; port: number } {
  const m = /^([^@\s]+)@(\[[^\]]+\]|[^:\s]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`'${spec}' is not user@host[:port]`);
  return { username: m[1]!, host: m[2]!.replace(/^\[|\]$/g, ""), port: m[3] ? Number(m[3]) : 22 };
}

interface SftpAttrs {
  mode: number;
  size: number;
  mtime: number;
  atime: number;
}

/** The part of ssh2's SFTPWrapper used here (node-ssh does not ship its types). */
interface Sftp {
  lstat(path: string, cb: (err: Error | undefined, attrs: SftpAttrs) => void): void;
  stat(path: string, cb: (err: Error | undefined, attrs: SftpAttrs) => void): void;
  readdir(path: string, cb: (err: Error | undefined, list: { filename: string; attrs: SftpAttrs }[]) => void): void;
  readlink(path: string, cb: (err: Error | undefined, target: string) => void): void;
  symlink(target: string, link: string, cb: (err: Error | undefined) => void): void;
  mkdir(path: string, attrs: { mode?: number }, cb: (err: Error | undefined) => void): void;
  unlink(path: string, cb: (err: Error | undefined) => void): void;
  ext_openssh_rename(from: string, to: string, cb: (err: Error | undefined) => void): void;
  setstat(path: string, attrs: { mode?: number; size?: number }, cb: (err: Error | undefined) => void): void;
  utimes(path: string, atime: number, mtime: number, cb: (err: Error | undefined) => void): void;
  fastGet(remote: string, local: string, opts: FastOpts, cb: (err: Error | undefined) => void): void;
  fastPut(local: string, remote: string, opts: FastOpts, cb: (err: Error | undefined) => void): void;
  open(path: string, flags: string, cb: (err: Error | undefined, handle: Buffer) => void): void;
  close(handle: Buffer, cb: (err: Error | undefined) => void): void;
  read(handle: Buffer, buf: Buffer, off: number, len: number, position: number, cb: (err: Error | undefined, bytesRead: number) => void): void;
  write(handle: Buffer, buf: Buffer, off: number, len: number, position: number, cb: (err: Error | undefined) => void): void;
  end(): void;
}
interface FastOpts {
  concurrency?: number;
  chunkSize?: number;
  step?: (total: number, chunk: number, size: number) => void;
}

/**
 * node-ssh (ssh2) carries optional native addons that esbuild cannot bundle; loading it by a
 * computed name keeps it out of the bundles and resolves it from node_modules when used.
 */
async function loadNodeSsh(): Promise<typeof NodeSSH> {
  const name = ["node", "ssh"].join("-");
  return ((await import(name)) as { NodeSSH: typeof NodeSSH }).NodeSSH;
}

/** Requests in flight and bytes per request of a parallel copy (as fastPut/fastGet are called here). */
const COPY_CONCURRENCY = 64;
const COPY_CHUNK = 64 * 1024;
/** A partial file written by a parallel copy may have gaps this close to its end. */
const UNORDERED_TAIL_BYTES = COPY_CONCURRENCY * COPY_CHUNK;

/** Files this large are probed for being one big hole (a `stat` over SSH) before copying. */
const SPARSE_PROBE_BYTES = 64 * 1024 * 1024;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function call<T>(fn: (cb: (err: Error | undefined, v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

export interface SshTransferOptions {
  recursive?: boolean;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  limits?: Partial<ReceiveLimits>;
  /** Skip files already complete at the destination (same size and mtime) and continue partial ones whose prefix verifies. */
  resume?: boolean;
  /** On failure or cancel, keep the partial file (host side on get; the remote one on put stays anyway) for a later resume. */
  keepPartial?: boolean;
}

export interface SshOutcome {
  entries: number;
  files: number;
  bytes: number;
  bytesSent: number;
  channel: "ssh";
  elapsedMs: number;
  root: string;
}

export class SshTransfer {
  /** The host-side partial file being written, removed on cancel. */
  private localPartial: string | undefined;

  private constructor(
    readonly ssh: NodeSSH,
    private readonly sftp: Sftp,
  ) {}

  static async connect(target: SshTarget): Promise<SshTransfer> {
    const ssh = new (await loadNodeSsh())();
    await ssh.connect({
      host: target.host,
      port: target.port ?? 22,
      username: target.username,
      privateKeyPath: target.privateKeyPath,
      password: target.password,
      readyTimeout: target.readyTimeoutMs ?? 20_000,
    });
    const sftp = (await ssh.requestSFTP()) as unknown as Sftp;
    return new SshTransfer(ssh, sftp);
  }

  dispose(): void {
    this.sftp.end();
    this.ssh.dispose();
  }

  /** Host file or tree → remote path (into it when it is a directory). */
  put(source: string, remotePath: string, opts: SshTransferOptions = {}): Promise<SshOutcome> {
    return this.cancellable(opts, () => this.putTree(source, remotePath, opts));
  }

  /** Remote file or tree → host path (into it when it is a directory). Nothing the remote says escapes `hostPath`. */
  get(remotePath: string, hostPath: string, opts: SshTransferOptions = {}): Promise<SshOutcome> {
    return this.cancellable(opts, () => this.getTree(remotePath, hostPath, opts));
  }

  /** Cancel drops the SSH connection (this SshTransfer is then closed); partial files are removed before the rejection. */
  private async cancellable<T>(opts: SshTransferOptions, body: () => Promise<T>): Promise<T> {
    const signal = opts.signal;
    if (!signal) return body();
    if (signal.aborted) throw new TransferError("cancelled", "transfer cancelled");
    const work = body();
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(new TransferError("cancelled", "transfer cancelled"));
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([work, aborted]);
    } catch (err) {
      const settled = await Promise.race([
        work.then((value): { value: T } | undefined => ({ value }), () => undefined),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000)),
      ]);
      // A cancel that came after the last file was in place (e.g. from the final progress event) is too late: report what was done.
      if (settled) return settled.value;
      if (this.localPartial && !opts.keepPartial) await unlink(this.localPartial).catch(() => undefined);
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  private async putTree(source: string, remotePath: string, opts: SshTransferOptions): Promise<SshOutcome> {
    const started = Date.now();
    const plan = await planTree(source, opts.recursive ?? false);
    const meter = new ProgressMeter(opts.onProgress);
    meter.bytesTotal = plan.bytes;
    meter.entriesTotal = plan.entries.length;
    const existing = await call<SftpAttrs>((cb) => this.sftp.stat(remotePath, cb)).catch(() => undefined);
    const root = existing && (existing.mode & S_IFMT) === S_IFDIR ? posix.join(remotePath, basename(source)) : remotePath;
    const dirs: { path: string; mode: number; mtimeMs: number }[] = [];
    let bytesSent = 0;
    let files = 0;
    const abort = this.abortOn(opts.signal);
    try {
      for (const { frame: e, abs } of plan.entries) {
        abort.check();
        const remote = e.path === "" ? root : posix.join(root, e.path);
        meter.path = e.path;
        if (e.kind === "dir") {
          await call<void>((cb) => this.sftp.mkdir(remote, { mode: 0o700 }, cb)).catch(async (err) => {
            const st = await call<SftpAttrs>((cb) => this.sftp.lstat(remote, cb)).catch(() => undefined);
            if (!st || (st.mode & S_IFMT) !== S_IFDIR) throw err;
          });
          dirs.push({ path: remote, mode: e.mode, mtimeMs: e.mtimeMs });
        } else if (e.kind === "symlink") {
          await call<void>((cb) => this.sftp.unlink(remote, cb)).catch(() => undefined);
          await call<void>((cb) => this.sftp.symlink(e.target!, remote, cb));
        } else {
          files++;
          const size = e.size ?? 0;
          if (opts.resume) {
            const st = await call<SftpAttrs>((cb) => this.sftp.lstat(remote, cb)).catch(() => undefined);
            if (st && (st.mode & S_IFMT) === S_IFREG && st.size === size && st.mtime === Math.floor(e.mtimeMs / 1000)) {
              meter.add(size);
              continue;
            }
          }
          const tmp = posix.join(posix.dirname(remote), partialName(posix.basename(remote)));
          const from = opts.resume ? await this.verifiedPrefix(abs, tmp, "put", size) : 0;
          if (from > 0) {
            meter.add(from);
            await call<void>((cb) => this.sftp.setstat(tmp, { size: from }, cb));
            await this.copyRange("put", abs, tmp, from, size, abort.check, (n) => meter.add(n));
            bytesSent += size - from;
          } else if (plan.entries[e.i]?.allHole && (await this.run("truncate", ["-s", String(size), "--", tmp]))) {
            meter.add(size);
          } else {
            let last = 0;
            await call<void>((cb) =>
              this.sftp.fastPut(abs, tmp, { concurrency: 64, chunkSize: 64 * 1024, step: (total) => (meter.add(total - last), (last = total)) }, cb),
            );
            bytesSent += size;
          }
          const st = await call<SftpAttrs>((cb) => this.sftp.lstat(tmp, cb));
          if (st.size !== size) throw new TransferError("io", `'${e.path}' changed while it was being sent`);
          await call<void>((cb) => this.sftp.setstat(tmp, { mode: e.mode & 0o7777 }, cb));
          await call<void>((cb) => this.sftp.utimes(tmp, Date.now() / 1000, e.mtimeMs / 1000, cb));
          abort.check(); // a cancel that raced the last bytes must not put the file in place
          await call<void>((cb) => this.sftp.ext_openssh_rename(tmp, remote, cb));
        }
        meter.entriesDone++;
      }
      for (const d of dirs.reverse()) {
        await call<void>((cb) => this.sftp.setstat(d.path, { mode: d.mode & 0o7777 }, cb));
        await call<void>((cb) => this.sftp.utimes(d.path, Date.now() / 1000, d.mtimeMs / 1000, cb));
      }
      meter.emit(true);
      return { entries: plan.entries.length, files, bytes: plan.bytes, bytesSent, channel: "ssh", elapsedMs: Date.now() - started, root };
    } catch (err) {
      throw abort.error() ?? (err instanceof TransferError ? err : new TransferError("io", `ssh put: ${(err as Error).message}`));
    } finally {
      abort.done();
    }
  }

  private async getTree(remotePath: string, hostPath: string, opts: SshTransferOptions): Promise<SshOutcome> {
    const started = Date.now();
    const limits: ReceiveLimits = { ...DEFAULT_RECEIVE_LIMITS, ...opts.limits };
    const name = safeName(posix.basename(remotePath.replace(/\/+$/, "")) || "root");
    const hostSt = await stat(hostPath).catch(() => undefined);
    const root = hostSt?.isDirectory() ? join(hostPath, name) : hostPath;
    // List first (lstat, never followed), enforcing caps, then copy.
    type Item = { rel: string; parts: string[]; attrs: SftpAttrs; target?: string };
    const items: Item[] = [];
    let bytes = 0;
    const visit = async (remote: string, rel: string, parts: string[], attrs: SftpAttrs) => {
      if (items.length >= limits.maxEntries) throw new TransferError("limit", `more than ${limits.maxEntries} entries`);
      const kind = attrs.mode & S_IFMT;
      if (kind === S_IFLNK) items.push({ rel, parts, attrs, target: await call<string>((cb) => this.sftp.readlink(remote, cb)) });
      else if (kind === S_IFREG) {
        items.push({ rel, parts, attrs });
        bytes += attrs.size;
        if (bytes > limits.maxBytes) throw new TransferError("limit", `more than ${limits.maxBytes} bytes`);
      } else if (kind === S_IFDIR) {
        if (rel === "" && !opts.recursive) throw new TransferError("io", `${remotePath} is a directory (copy it with -r)`);
        items.push({ rel, parts, attrs });
        const list = await call<{ filename: string; attrs: SftpAttrs }[]>((cb) => this.sftp.readdir(remote, cb));
        list.sort((a, b) => (a.filename < b.filename ? -1 : 1));
        for (const child of list) {
          if (child.filename === "." || child.filename === "..") continue;
          const childRel = rel === "" ? child.filename : `${rel}/${child.filename}`;
          const childParts = safeComponents(childRel, limits);
          await visit(posix.join(remote, child.filename), childRel, childParts, child.attrs);
        }
      }
    };
    const rootAttrs = await call<SftpAttrs>((cb) => this.sftp.lstat(remotePath, cb)).catch((e: Error) => {
      throw new TransferError("io", `${remotePath}: ${e.message}`);
    });
    await visit(remotePath, "", [], rootAttrs);
    const fs = await statfs(dirname(root)).catch(() => undefined);
    if (fs && bytes > fs.bavail * fs.bsize) throw new TransferError("limit", `${bytes} bytes to copy, ${fs.bavail * fs.bsize} free`);

    const meter = new ProgressMeter(opts.onProgress);
    meter.bytesTotal = bytes;
    meter.entriesTotal = items.length;
    const dirs = new Set<string>();
    const dirAttrs: { abs: string; mode: number; mtime: number }[] = [];
    let files = 0;
    let bytesSent = 0;
    let currentTmp: string | undefined;
    const abort = this.abortOn(opts.signal);
    try {
      for (const it of items) {
        abort.check();
        const abs = it.parts.length ? join(root, ...it.parts) : root;
        if (it.parts.length && !dirs.has(it.parts.slice(0, -1).join("/"))) throw new TransferError("unsafe-path", `'${printable(it.rel)}' is not inside a copied directory`);
        meter.path = it.rel;
        const kind = it.attrs.mode & S_IFMT;
        const existing = await lstat(abs).catch(() => undefined);
        if (kind === S_IFDIR) {
          if (existing && !existing.isDirectory()) throw new TransferError("io", `'${printable(it.rel)}' exists and is not a directory`);
          if (!existing) await mkdir(abs, { mode: 0o700 });
          dirs.add(it.parts.join("/"));
          dirAttrs.push({ abs, mode: it.attrs.mode & 0o777, mtime: it.attrs.mtime });
        } else if (kind === S_IFLNK) {
          const target = it.target ?? "";
          if (!limits.allowEscapingSymlinks && !symlinkStaysInside(it.rel, target))
            throw new TransferError("unsafe-path", `symlink '${printable(it.rel)}' -> '${printable(target)}' points outside the transfer`);
          if (existing?.isDirectory()) throw new TransferError("io", `'${printable(it.rel)}' exists as a directory`);
          if (existing) await unlink(abs);
          await symlink(target, abs);
        } else {
          files++;
          const size = it.attrs.size;
          if (opts.resume && existing?.isFile() && existing.size === size && Math.floor(existing.mtimeMs / 1000) === it.attrs.mtime) {
            meter.add(size);
            continue;
          }
          if (existing?.isDirectory()) throw new TransferError("io", `'${printable(it.rel)}' exists as a directory`);
          const tmp = join(dirname(abs), partialName(basename(abs)));
          const remote = it.rel === "" ? remotePath : posix.join(remotePath, it.rel);
          const partial = opts.resume ? await lstat(tmp).catch(() => undefined) : undefined;
          const from = partial?.isFile() ? await this.verifiedPrefix(tmp, remote, "get", size) : 0;
          if (from === 0) await unlink(tmp).catch(() => undefined); // never write through whatever is there
          currentTmp = tmp;
          this.localPartial = tmp;
          if (from > 0) {
            meter.add(from);
            await truncate(tmp, from);
            await this.copyRange("get", tmp, remote, from, size, abort.check, (n) => meter.add(n));
            bytesSent += size - from;
          } else if (size >= SPARSE_PROBE_BYTES && (await this.allHole(remote))) {
            await writeFile(tmp, "", { flag: "wx", mode: 0o600 });
            await truncate(tmp, size);
            meter.add(size);
          } else {
            let last = 0;
            await call<void>((cb) =>
              this.sftp.fastGet(remote, tmp, { concurrency: 64, chunkSize: 64 * 1024, step: (total) => (meter.add(total - last), (last = total)) }, cb),
            );
            bytesSent += size;
          }
          const got = await lstat(tmp);
          if (!got.isFile() || got.size !== size) throw new TransferError("limit", `'${printable(it.rel)}': ${got.size} bytes arrived, ${size} declared`);
          await chmod(tmp, it.attrs.mode & 0o777);
          await utimes(tmp, new Date(), new Date(it.attrs.mtime * 1000));
          abort.check(); // a cancel that raced the last bytes must not put the file in place
          await rename(tmp, abs);
          currentTmp = undefined;
          this.localPartial = undefined;
        }
        meter.entriesDone++;
      }
      for (const d of dirAttrs.reverse()) {
        await chmod(d.abs, d.mode);
        await utimes(d.abs, new Date(), new Date(d.mtime * 1000));
      }
      meter.emit(true);
      return { entries: items.length, files, bytes, bytesSent, channel: "ssh", elapsedMs: Date.now() - started, root };
    } catch (err) {
      if (currentTmp && !opts.keepPartial) await unlink(currentTmp).catch(() => undefined);
      throw abort.error() ?? (err instanceof TransferError ? err : new TransferError("io", `ssh get: ${(err as Error).message}`));
    } finally {
      abort.done();
    }
  }

  /**
   * Where a partial file can continue: its size less {@link UNORDERED_TAIL_BYTES} (gaps a parallel
   * copy may have left), when the SHA-256 of that prefix matches the source; else 0.
   * `put`: `local` is the source, `remote` the partial; `get`: `local` is the partial.
   */
  private async verifiedPrefix(local: string, remote: string, direction: "put" | "get", size: number): Promise<number> {
    let partialSize: number | undefined;
    if (direction === "get") {
      const st = await lstat(local).catch(() => undefined);
      partialSize = st?.isFile() ? st.size : undefined;
    } else {
      const st = await call<SftpAttrs>((cb) => this.sftp.lstat(remote, cb)).catch(() => undefined);
      partialSize = st && (st.mode & S_IFMT) === S_IFREG ? st.size : undefined;
    }
    if (partialSize === undefined || partialSize > size) return 0;
    const from = Math.max(0, partialSize - UNORDERED_TAIL_BYTES);
    if (from === 0) return 0;
    const [mine, theirs] = await Promise.all([sha256Prefix(local, from), this.remoteSha256Prefix(remote, from)]);
    return mine !== undefined && mine === theirs ? from : 0;
  }

  /** SHA-256 (hex) of a remote file's first `length` bytes, or undefined when the remote cannot say. */
  private async remoteSha256Prefix(remote: string, length: number): Promise<string | undefined> {
    try {
      const r = await this.ssh.execCommand(`head -c ${length} -- ${shellQuote(remote)} | sha256sum`);
      const m = /^([0-9a-f]{64})\s/.exec(r.stdout);
      return r.code === 0 && m ? m[1] : undefined;
    } catch {
      return undefined;
    }
  }

  /** Copies bytes [from, to) of one file onto the same range of the other, with requests in parallel. */
  private async copyRange(direction: "put" | "get", local: string, remote: string, from: number, to: number, check: () => void, progress: (n: number) => void): Promise<void> {
    const fh: FileHandle = await open(local, direction === "put" ? constants.O_RDONLY : constants.O_RDWR | constants.O_NOFOLLOW);
    const handle = await call<Buffer>((cb) => this.sftp.open(remote, direction === "put" ? "r+" : "r", cb));
    try {
      let next = from;
      const lane = async () => {
        const buf = Buffer.allocUnsafe(COPY_CHUNK);
        while (next < to) {
          check();
          const at = next;
          const length = Math.min(COPY_CHUNK, to - at);
          next += length;
          if (direction === "put") {
            const { bytesRead } = await fh.read(buf, 0, length, at);
            if (bytesRead !== length) throw new TransferError("io", "the source shrank while it was being sent");
            await call<void>((cb) => this.sftp.write(handle, buf, 0, length, at, cb));
          } else {
            for (let got = 0; got < length; ) {
              const n = await call<number>((cb) => this.sftp.read(handle, buf, got, length - got, at + got, cb));
              if (!n) throw new TransferError("limit", "the remote file shrank while it was being copied");
              got += n;
            }
            await fh.write(buf, 0, length, at);
          }
          progress(length);
        }
      };
      await Promise.all(Array.from({ length: COPY_CONCURRENCY }, lane));
    } finally {
      await call<void>((cb) => this.sftp.close(handle, cb)).catch(() => undefined);
      await fh.close();
    }
  }

  /** Runs a command with quoted arguments; true when it exits 0 (false when the machine cannot run it). */
  private async run(command: string, args: string[]): Promise<boolean> {
    try {
      const r = await this.ssh.exec(command, args, { stream: "both" });
      return r.code === 0;
    } catch {
      return false;
    }
  }

  /** True when a remote regular file has no data blocks at all (a hole end to end). */
  private async allHole(remote: string): Promise<boolean> {
    try {
      const r = await this.ssh.exec("stat", ["-c", "%b", "--", remote], { stream: "both" });
      return r.code === 0 && r.stdout.trim() === "0";
    } catch {
      return false;
    }
  }

  /** Cancel = drop the SSH connection (in-flight SFTP requests fail at once). */
  private abortOn(signal: AbortSignal | undefined) {
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      this.ssh.connection?.end();
    };
    signal?.addEventListener("abort", onAbort);
    if (signal?.aborted) onAbort();
    const error = () => (aborted ? new TransferError("cancelled", "transfer cancelled") : undefined);
    return {
      check: () => {
        const e = error();
        if (e) throw e;
      },
      error,
      done: () => signal?.removeEventListener("abort", onAbort),
    };
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** SHA-256 (hex) of a host file's first `length` bytes, or undefined when it is shorter or unreadable. */
async function sha256Prefix(path: string, length: number): Promise<string | undefined> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const hash = createHash("sha256");
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (let at = 0; at < length; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - at), at);
      if (!bytesRead) return undefined;
      hash.update(buf.subarray(0, bytesRead));
      at += bytesRead;
    }
    return hash.digest("hex");
  } finally {
    await fh.close();
  }
}
