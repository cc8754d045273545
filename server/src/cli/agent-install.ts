/**
 * `vmc agent install TARGET --ssh user@host[:port] [--key FILE] [--guest-broker URL] [--dir DIR]
 *  [--timeout S] [--json]`: copies the bundled agent (dist/agent.mjs) to a machine over SSH,
 * installs it as a systemd service where the machine runs systemd (as root), else starts it
 * with nohup and a pid file, and waits until the agent's HELLO arrives on the broker.
 */
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { AgentId } from "@vmc/protocol/bus";
import { brokerUrl, vmcHome } from "../config";
import { openFleetSession } from "../fleet/session";
import { loadOrCreateControllerKeys } from "../store/keys";
import { parseSshSpec, SshTransfer } from "../transfer/ssh";

const USAGE = `usage: vmc agent install TARGET --ssh user@host[:port] [--key FILE] [--guest-broker URL] [--dir DIR] [--timeout S] [--json]
TARGET is the agent id the machine will have. --guest-broker is the broker as the machine reaches it (default: --broker).`;

/** The bundled agent next to this CLI bundle (dist/agent.mjs), or in the checkout's dist/. */
function agentBundle(): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  for (const candidate of [join(here, "agent.mjs"), join(here, "..", "..", "..", "dist", "agent.mjs")]) if (existsSync(candidate)) return candidate;
  throw new Error("dist/agent.mjs not found: run npm run build");
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ssh: { type: "string" },
      key: { type: "string" },
      broker: { type: "string" },
      "guest-broker": { type: "string" },
      dir: { type: "string" },
      timeout: { type: "string", default: "60" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const target = positionals[0];
  if (!target || !values.ssh || !AgentId.safeParse(target).success) {
    console.error(USAGE);
    return 2;
  }
  const say = (line: string) => values.json || console.error(line);
  const home = vmcHome();
  const keys = loadOrCreateControllerKeys(home);
  const controllerBroker = brokerUrl(values.broker);
  const guestBroker = values["guest-broker"] ?? controllerBroker;
  const spec = parseSshSpec(values.ssh);
  const ssh = await SshTransfer.connect({ ...spec, privateKeyPath: values.key });
  const local = mkdtempSync(join(tmpdir(), "vmc-install-"));
  try {
    const probe = await ssh.ssh.execCommand(
      `sh -c ${sq('command -v node >/dev/null && node --version; id -u; [ -d /run/systemd/system ] && command -v systemctl >/dev/null && echo systemd; echo "home=$HOME"')}`,
    );
    const lines = probe.stdout.split("\n");
    const nodeVersion = lines.find((l) => /^v\d+/.test(l));
    if (!nodeVersion || Number(nodeVersion.slice(1).split(".")[0]) < 18) throw new Error(`node ≥ 18 is needed on ${spec.host} (found: ${nodeVersion ?? "none"})`);
    const root = lines.includes("0");
    const systemd = root && lines.includes("systemd");
    const remoteHome = lines.find((l) => l.startsWith("home="))?.slice(5) || "/tmp";
    const dir = values.dir ?? (root ? "/opt/vmc" : `${remoteHome}/.local/share/vmc`);
    await ssh.ssh.execCommand(`mkdir -p ${sq(dir)}`);
    say(`installing the agent in ${spec.host}:${dir} (${systemd ? "systemd service" : "nohup + pid file"})`);
    await ssh.put(agentBundle(), `${dir}/agent.mjs`);
    const env = { VMC_AGENT_ID: target, VMC_BROKER: guestBroker, VMC_CONTROLLER_KEY: keys.publicKey, VMC_AGENT_STATE: `${dir}/state` };
    writeFileSync(join(local, "agent.env"), Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join(""), { mode: 0o600 });
    await ssh.put(join(local, "agent.env"), `${dir}/agent.env`);
    let start: string;
    if (systemd) {
      writeFileSync(
        join(local, "vmc-agent.service"),
        `[Unit]\nDescription=VM Controller agent\nAfter=network-online.target\n\n[Service]\nEnvironmentFile=${dir}/agent.env\nExecStart=${"/usr/bin/env"} node ${dir}/agent.mjs\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n`,
      );
      await ssh.put(join(local, "vmc-agent.service"), "/etc/systemd/system/vmc-agent.service");
      start = "systemctl daemon-reload && systemctl enable vmc-agent.service && systemctl restart vmc-agent.service";
    } else {
      const d = sq(dir);
      // The previous instance is stopped first, in the foreground: only `nohup node` goes to the background.
      start = `cd ${d} || exit 1; if [ -f agent.pid ]; then kill "$(cat agent.pid)" 2>/dev/null; fi; set -a; . ./agent.env; set +a; nohup node agent.mjs >> agent.log 2>&1 < /dev/null & echo $! > agent.pid`;
    }
    const started = await ssh.ssh.execCommand(`sh -c ${sq(start)}`);
    if (started.code !== 0) throw new Error(`starting the agent failed: ${started.stderr}`);
    say(`waiting for ${target}'s HELLO on ${controllerBroker}`);
    const session = await openFleetSession({ brokerUrl: controllerBroker, home, name: "vmc-agent-install" });
    try {
      const deadline = Date.now() + Number(values.timeout) * 1000;
      for (;;) {
        await session.fleet.discover({ maxMs: 2000 });
        const agent = session.fleet.agents().find((a) => a.agentId === target && a.state === "online" && a.hello);
        if (agent) {
          const result = { agentId: target, host: spec.host, dir, service: systemd ? "systemd" : "nohup", agentVersion: agent.hello!.agentVersion, dataEndpoint: agent.hello!.dataEndpoint };
          if (values.json) console.log(JSON.stringify(result, null, 2));
          else say(`${target} is online (agent ${result.agentVersion})`);
          return 0;
        }
        if (Date.now() > deadline) throw new Error(`no HELLO from ${target} within ${values.timeout} s (see ${dir}/agent.log on the machine)`);
      }
    } finally {
      await session.close();
    }
  } finally {
    ssh.dispose();
    rmSync(local, { recursive: true, force: true });
  }
}
