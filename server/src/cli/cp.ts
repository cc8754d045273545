/**
 * `vmc cp [-r] [--json] [--resume] [--keep-partial] [--channel auto|direct|bus] SRC... DST`
 * Copies between the host and an agent (or VM); agent paths are `NAME:/path`. Without an agent,
 * `--ssh user@host[:port] [--key FILE]` copies over SFTP (NAME is then ignored).
 */
import { parseArgs } from "node:util";
import { basename } from "node:path";
import { vmcHome } from "../config";
import { openFleetSession } from "../fleet/session";
import { loadOrCreateControllerKeys } from "../store/keys";
import { VmStore } from "../store/vms";
import { TransferClient, type TransferOptions } from "../transfer/client";
import { TransferError } from "../transfer/errors";
import type { TransferProgress } from "../transfer/progress";
import { resolveTransferTarget } from "../transfer/resolve";
import { parseSshSpec, SshTransfer } from "../transfer/ssh";

const USAGE = `usage: vmc cp [-r] [--json] [--resume] [--keep-partial] [--channel auto|direct|bus] SRC... DST
       vmc cp --ssh user@host[:port] [--key FILE] [-r] SRC... DST     (agentless, over SFTP)
Agent paths are NAME:/path (NAME = agent id or VM name); either every SRC or DST is one.`;

/** `NAME:/path` → parts; a plain host path → undefined. */
export function parseRemote(arg: string): { name: string; path: string } | undefined {
  const m = /^([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*):(.*)$/.exec(arg);
  if (!m || m[1]!.length === 1) return undefined; // `C:...` stays a host path
  return { name: m[1]!, path: m[2] || "." };
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      recursive: { type: "boolean", short: "r" },
      json: { type: "boolean" },
      resume: { type: "boolean" },
      "keep-partial": { type: "boolean" },
      channel: { type: "string", default: "auto" },
      broker: { type: "string" },
      ssh: { type: "string" },
      key: { type: "string" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length < 2) {
    console.error(USAGE);
    return 2;
  }
  const dst = positionals.at(-1)!;
  const srcs = positionals.slice(0, -1);
  const dstRemote = parseRemote(dst);
  const srcRemotes = srcs.map(parseRemote);
  const direction = dstRemote ? "put" : "get";
  if (dstRemote ? srcRemotes.some(Boolean) : !srcRemotes.every(Boolean)) {
    console.error(`vmc cp: copy from the host to NAME:/path, or from NAME:/path to the host\n${USAGE}`);
    return 2;
  }
  const channel = values.channel as TransferOptions["channel"];
  if (!["auto", "direct", "bus"].includes(channel!)) {
    console.error("vmc cp: --channel is auto, direct or bus");
    return 2;
  }
  const tty = process.stderr.isTTY && !values.json && !values.quiet;
  const bar = tty ? progressBar() : undefined;
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once("SIGINT", onSigint);
  const results: Record<string, unknown>[] = [];
  let failed = 0;
  const common = { recursive: values.recursive ?? false, resume: values.resume ?? false, keepPartial: values["keep-partial"] ?? false, signal: ac.signal };

  const report = (src: string, to: string, r: Record<string, unknown> | undefined, err?: unknown) => {
    bar?.done();
    if (err) {
      failed++;
      const e = err instanceof TransferError ? err : new TransferError("io", (err as Error).message);
      results.push({ source: src, destination: to, ok: false, code: e.code, error: e.message });
      if (!values.json) console.error(`vmc cp: ${src}: ${e.message}`);
    } else {
      results.push({ source: src, destination: to, ok: true, ...r });
      if (!values.json && !values.quiet && r) console.error(`${src} → ${to}: ${fmtBytes(Number(r.bytes))} in ${(Number(r.elapsedMs) / 1000).toFixed(1)} s via ${String(r.channel)}`);
    }
  };

  try {
    if (values.ssh) {
      const spec = parseSshSpec(values.ssh);
      const ssh = await SshTransfer.connect({ ...spec, privateKeyPath: values.key });
      try {
        for (const [i, src] of srcs.entries()) {
          const remote = direction === "put" ? dstRemote!.path : srcRemotes[i]!.path;
          try {
            const r = direction === "put" ? await ssh.put(src, remote, { ...common, onProgress: bar?.update }) : await ssh.get(remote, dst, { ...common, onProgress: bar?.update });
            report(src, dst, { ...r });
          } catch (err) {
            report(src, dst, undefined, err);
          }
        }
      } finally {
        ssh.dispose();
      }
    } else {
      const session = await openFleetSession({ brokerUrl: values.broker, name: "vmc-cp" });
      try {
        const vms = new VmStore(vmcHome()).list();
        await session.fleet.discover();
        const client = new TransferClient({ signingKey: loadOrCreateControllerKeys(vmcHome()).privateKey, bus: session.bus });
        for (const [i, src] of srcs.entries()) {
          const remote = direction === "put" ? dstRemote! : srcRemotes[i]!;
          const hello = session.fleet.agents().find((a) => a.agentId === remote.name)?.hello;
          const target = resolveTransferTarget(remote.name, hello, vms);
          try {
            const opts = { ...common, channel, onProgress: bar?.update };
            const r = direction === "put" ? await client.put(target, src, remote.path, opts) : await client.get(target, remote.path, dst, opts);
            report(src, dst, { ...r });
          } catch (err) {
            report(src, dst, undefined, err);
          }
        }
      } finally {
        await session.close();
      }
    }
  } finally {
    process.off("SIGINT", onSigint);
  }
  if (values.json) console.log(JSON.stringify(results.length === 1 ? results[0] : results, null, 2));
  return failed ? 1 : 0;
}

function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${n.toFixed(u ? 1 : 0)} ${units[u]}`;
}

/** One line on stderr, redrawn: percentage, bytes, rate, ETA, current path. */
function progressBar() {
  let drawn = false;
  return {
    update: (p: TransferProgress) => {
      const pct = p.bytesTotal ? Math.floor((p.bytesDone / p.bytesTotal) * 100) : 100;
      const width = 24;
      const fill = Math.round((pct / 100) * width);
      const eta = p.etaMs === null ? "--" : `${Math.ceil(p.etaMs / 1000)}s`;
      const line = `[${"#".repeat(fill)}${"-".repeat(width - fill)}] ${String(pct).padStart(3)}% ${fmtBytes(p.bytesDone)}/${fmtBytes(p.bytesTotal)} ${fmtBytes(p.rate)}/s ETA ${eta} ${basename(p.path)}`;
      process.stderr.write(`\r${line.slice(0, (process.stderr.columns || 100) - 1)}\x1b[K`);
      drawn = true;
    },
    done: () => {
      if (drawn) process.stderr.write("\r\x1b[K");
      drawn = false;
    },
  };
}
