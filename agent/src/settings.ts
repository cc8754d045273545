/**
 * Where an agent's settings come from, strongest first: command-line flags, the `--config` JSON
 * file, the environment, the kernel command line (inside a VM), defaults.
 *
 * Kernel command line: the kernel hands `name=value` words it does not know to init, but takes
 * words whose name has a dot as module options, and what reaches the agent's environment
 * depends on init. So the agent reads `/proc/cmdline` itself: `vmc_id=`, `vmc_broker=`,
 * `vmc_key=`, `vmc_labels=k=v,k2=v2`, `vmc_state=`.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { AgentId } from "@vmc/protocol/bus";
import { vmcHome } from "@vmc/server/config";

export interface AgentSettings {
  id: string;
  brokerUrl?: string;
  labels: Record<string, string>;
  /** base64 raw Ed25519 public key; undefined → the controller key in $VMC_HOME/keys. */
  key?: string;
  stateDir: string;
  /** Presence HEARTBEAT period, ms. */
  heartbeatMs?: number;
  /** The id came from the kernel command line or the guest init's environment: running inside a VM. */
  inVm: boolean;
  /** `host:port` for the transfer data endpoint. */
  dataListen?: string;
  noTransfer: boolean;
}

const ConfigFile = z.object({
  id: z.string().optional(),
  broker: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  key: z.string().optional(),
  stateDir: z.string().optional(),
});

export const AGENT_USAGE = `usage: vmc agent --id ID [--broker URL] [--label k=v]... [--config FILE] [--key PUBKEY_B64] [--state-dir DIR]
                 [--heartbeat-ms N] [--data-listen HOST:PORT] [--no-transfer]

Runs the guest agent: announces itself on the bus and runs signed commands from its inbox.
Settings also come from a JSON config file ({"id","broker","labels","key","stateDir"}), the
environment (VMC_AGENT_ID, VMC_BROKER, VMC_CONTROLLER_KEY, VMC_LABELS=k=v,k2=v2, VMC_AGENT_STATE,
VMC_AGENT_HEARTBEAT_MS)
and, inside a VM, the kernel command line (vmc_id=, vmc_broker=, vmc_key=, vmc_labels=, vmc_state=).
Without a key the controller public key in $VMC_HOME/keys is used.`;

/** `vmc_*` words of a kernel command line, by name without the prefix. */
export function parseKernelCmdline(text: string): Record<string, string> {
  const words: Record<string, string> = {};
  for (const word of text.trim().split(/\s+/)) {
    const eq = word.indexOf("=");
    if (eq <= 4 || !word.startsWith("vmc_")) continue;
    words[word.slice(4, eq)] = word.slice(eq + 1).replace(/^"(.*)"$/, "$1");
  }
  return words;
}

/** `k=v,k2=v2` (also repeated `k=v` flags). */
export function parseLabels(items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items.flatMap((i) => i.split(","))) {
    if (!item.trim()) continue;
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`label '${item}' is not k=v`);
    labels[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
  }
  return labels;
}

/** `stomp://host:port`, or a bare `host:port` as a kernel command line may carry. */
function normaliseBroker(url: string | undefined): string | undefined {
  if (!url) return undefined;
  return /^[a-z]+:\/\//.test(url) ? url : `stomp://${url}`;
}

function readCmdline(path: string): Record<string, string> {
  try {
    return parseKernelCmdline(readFileSync(path, "utf8"));
  } catch {
    return {};
  }
}

export interface SettingsSources {
  env?: NodeJS.ProcessEnv;
  /** Default /proc/cmdline. */
  cmdlinePath?: string;
}

/** Resolves settings from `argv` (the flags after `vmc agent`) and the other sources. Throws with a usage message on bad input. */
export function resolveSettings(argv: string[], sources: SettingsSources = {}): AgentSettings {
  const env = sources.env ?? process.env;
  const { values } = parseArgs({
    args: argv,
    options: {
      id: { type: "string" },
      broker: { type: "string" },
      label: { type: "string", multiple: true },
      config: { type: "string" },
      key: { type: "string" },
      "state-dir": { type: "string" },
      "heartbeat-ms": { type: "string" },
      "data-listen": { type: "string" },
      "no-transfer": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  let file: z.infer<typeof ConfigFile> = {};
  if (values.config) {
    const parsed = ConfigFile.safeParse(JSON.parse(readFileSync(values.config, "utf8")));
    if (!parsed.success) throw new Error(`${values.config}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    file = parsed.data;
  }
  const cmdline = readCmdline(sources.cmdlinePath ?? "/proc/cmdline");
  const id = values.id ?? file.id ?? env.VMC_AGENT_ID ?? env.VMC_ID ?? cmdline.id;
  if (!id) throw new Error(`no agent id (--id, config "id", VMC_AGENT_ID or vmc_id=)\n\n${AGENT_USAGE}`);
  const checked = AgentId.safeParse(id);
  if (!checked.success) throw new Error(`agent id '${id}': ${checked.error.issues[0]?.message ?? "invalid"}`);
  const labels = values.label?.length
    ? parseLabels(values.label)
    : (file.labels ?? parseLabels([env.VMC_LABELS ?? cmdline.labels ?? ""]));
  const heartbeat = values["heartbeat-ms"] ?? env.VMC_AGENT_HEARTBEAT_MS;
  const heartbeatMs = heartbeat === undefined ? undefined : Number(heartbeat);
  if (heartbeatMs !== undefined && !(Number.isInteger(heartbeatMs) && heartbeatMs >= 50)) throw new Error(`--heartbeat-ms '${heartbeat}': an integer ≥ 50`);
  const settings: AgentSettings = {
    id,
    labels,
    inVm: !values.id && !file.id && !env.VMC_AGENT_ID && (env.VMC_ID !== undefined || cmdline.id !== undefined),
    noTransfer: values["no-transfer"] ?? false,
    stateDir: values["state-dir"] ?? file.stateDir ?? env.VMC_AGENT_STATE ?? cmdline.state ?? join(vmcHome(env), "agents", id),
  };
  const broker = normaliseBroker(values.broker ?? file.broker ?? env.VMC_BROKER ?? cmdline.broker);
  if (broker) settings.brokerUrl = broker;
  if (heartbeatMs !== undefined) settings.heartbeatMs = heartbeatMs;
  if (values["data-listen"]) settings.dataListen = values["data-listen"];
  const key = values.key ?? file.key ?? env.VMC_CONTROLLER_KEY ?? env.VMC_KEY ?? cmdline.key;
  if (key) settings.key = key;
  return settings;
}
