/**
 * `file.put` / `file.get`: each source in turn through the {@link TransferClient} (direct data
 * channel or the bus) or over SFTP (`channel: "ssh"`, target `user@host[:port]`), with progress
 * summed over the sources and cancellation through an AbortSignal.
 * @packageDocumentation
 */
import type { KeyObject } from "node:crypto";
import { VmcError, VmcErrorCodes } from "@vmc/protocol";
import type { FileGetParams, FilePutParams, FileTransferResult, TransferProgressValue } from "@vmc/protocol/rpc";
import type { BusClient } from "../bus/client";
import type { Fleet } from "../fleet/fleet";
import type { VmStore } from "../store/vms";
import { TransferClient, type TransferOptions } from "../transfer/client";
import { TransferError } from "../transfer/errors";
import type { TransferProgress } from "../transfer/progress";
import { resolveTransferTarget } from "../transfer/resolve";

export interface TransfersOptions {
  signingKey: KeyObject;
  bus: BusClient;
  fleet: Fleet;
  store: VmStore;
}

type Progress = (value: TransferProgressValue) => void;
type Outcome = Omit<FileTransferResult, "elapsedMs"> & { elapsedMs: number };

export class Transfers {
  private readonly client: TransferClient;

  constructor(private readonly options: TransfersOptions) {
    this.client = new TransferClient({ signingKey: options.signingKey, bus: options.bus });
  }

  put(params: FilePutParams, signal: AbortSignal, progress?: Progress): Promise<FileTransferResult> {
    const { target, path } = params.destination;
    return this.each(params.sources.length, params, signal, progress, `put ${params.sources.length} item(s) into ${target}:${path}`, async (i, opts) => {
      if (params.channel === "ssh") return this.ssh(target, (s) => s.put(params.sources[i]!, path, opts));
      return this.client.put(this.target(target), params.sources[i]!, path, { ...opts, channel: params.channel ?? "auto" });
    });
  }

  get(params: FileGetParams, signal: AbortSignal, progress?: Progress): Promise<FileTransferResult> {
    return this.each(params.sources.length, params, signal, progress, `get ${params.sources.length} item(s) into ${params.destination}`, async (i, opts) => {
      const source = params.sources[i]!;
      if (params.channel === "ssh") return this.ssh(source.target, (s) => s.get(source.path, params.destination, opts));
      return this.client.get(this.target(source.target), source.path, params.destination, { ...opts, channel: params.channel ?? "auto" });
    });
  }

  private target(name: string) {
    const hello = this.options.fleet.registry.get(name)?.hello;
    return resolveTransferTarget(name, hello, this.options.store.list());
  }

  private async ssh<T>(spec: string, fn: (s: import("../transfer/ssh").SshTransfer) => Promise<T>): Promise<T> {
    const { parseSshSpec, SshTransfer } = await import("../transfer/ssh");
    let parsed;
    try {
      parsed = parseSshSpec(spec);
    } catch (err) {
      throw new VmcError(-32602, `with channel "ssh" the target is user@host[:port]: ${err instanceof Error ? err.message : String(err)}`, { field: "target" });
    }
    const s = await SshTransfer.connect(parsed);
    try {
      return await fn(s);
    } finally {
      s.dispose();
    }
  }

  private async each(
    count: number,
    params: { recursive?: boolean | undefined; resume?: boolean | undefined; keepPartial?: boolean | undefined; workDoneToken?: unknown },
    signal: AbortSignal,
    progress: Progress | undefined,
    title: string,
    one: (i: number, opts: TransferOptions & { signal: AbortSignal }) => Promise<Outcome>,
  ): Promise<FileTransferResult> {
    const started = Date.now();
    const total: FileTransferResult = { entries: 0, files: 0, bytes: 0, bytesSent: 0, channel: "direct", elapsedMs: 0 };
    let doneBefore = 0;
    progress?.({ kind: "begin", title, bytesDone: 0, bytesTotal: 0, rate: 0, etaMs: null });
    try {
      for (let i = 0; i < count; i++) {
        const onProgress = (p: TransferProgress) =>
          progress?.({
            kind: "report",
            title: p.path,
            bytesDone: doneBefore + p.bytesDone,
            bytesTotal: doneBefore + p.bytesTotal,
            ...(p.bytesTotal > 0 ? { percentage: Math.min(100, Math.round(((doneBefore + p.bytesDone) * 100) / (doneBefore + p.bytesTotal))) } : {}),
            rate: p.rate,
            etaMs: p.etaMs,
          });
        let r: Outcome;
        try {
          r = await one(i, {
            recursive: params.recursive ?? false,
            resume: params.resume ?? false,
            keepPartial: params.keepPartial ?? false,
            signal,
            onProgress,
          });
        } catch (err) {
          throw asVmcError(err, signal);
        }
        total.entries += r.entries;
        total.files += r.files;
        total.bytes += r.bytes;
        total.bytesSent += r.bytesSent;
        total.channel = r.channel;
        doneBefore += r.bytes;
      }
    } finally {
      progress?.({ kind: "end", bytesDone: doneBefore, bytesTotal: doneBefore, rate: 0, etaMs: null });
    }
    total.elapsedMs = Date.now() - started;
    return total;
  }
}

function asVmcError(err: unknown, signal: AbortSignal): unknown {
  if (signal.aborted) return new VmcError(-32800, "transfer cancelled");
  if (err instanceof TransferError) return new VmcError(VmcErrorCodes.TransferFailed, err.message, { code: err.code, remote: err.remote });
  return err;
}
