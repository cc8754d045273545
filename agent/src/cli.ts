/**
 * `vmc agent ...` and `node agent.mjs ...`: resolve settings, start the agent, run until
 * SIGTERM/SIGINT, then say BYE and exit.
 */
import { readFileSync } from "node:fs";
import { readControllerPublicKey } from "@vmc/server/store/keys";
import { vmcHome } from "@vmc/server/config";
import { startAgent } from "./agent";
import { identityWaitRequested, onRestored, waitForIdentity } from "./identity-port";
import { defaultPlugins } from "./plugins";
import { AGENT_USAGE, resolveSettings } from "./settings";
import { warmUp } from "./warm-up";

export async function main(argv: string[]): Promise<number> {
  if (process.env.VMC_AGENT_TRACE) process.stderr.write(`vmc agent: main at ${process.uptime().toFixed(3)} s of Node, ${sinceExec()}\n`);
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log(AGENT_USAGE);
    return 0;
  }
  let settings;
  let fromIdentityPort = false;
  try {
    if (identityWaitRequested()) {
      // A template clone: who we are arrives on the VM's identity port once the host restored us.
      await warmUp(argv);
      const identity = await waitForIdentity();
      argv = [...argv, "--id", identity.agentId, "--broker", identity.broker, "--key", identity.controllerKey];
      fromIdentityPort = true;
    }
    settings = resolveSettings(argv);
  } catch (e) {
    console.error(`vmc agent: ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
  const key = settings.key ?? readControllerPublicKey(vmcHome());
  const agent = await startAgent({
    id: settings.id,
    brokerUrl: settings.brokerUrl,
    labels: settings.labels,
    controllerKey: key,
    stateDir: settings.stateDir,
    heartbeatIntervalMs: settings.heartbeatMs,
    plugins: defaultPlugins({ inVm: settings.inVm || fromIdentityPort, dataListen: settings.dataListen, noTransfer: settings.noTransfer }),
  });
  // After an in-place snapshot restore the host says so on the identity port (and sets our clock): reconnect at once.
  if (settings.inVm || fromIdentityPort) onRestored((hostTimeMs) => agent.restored(hostTimeMs));
  agent.bus.onState((state) => {
    if (state === "connected") process.stderr.write(`vmc agent ${settings.id}: connected to ${agent.bus.brokerUrl}\n`);
  });
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  await agent.stop(`received ${signal}`);
  // The identity port's reader never ends; nothing else should keep the process alive now.
  setTimeout(() => process.exit(0), 500).unref();
  return 0;
}

/** Seconds since this process's exec, from the kernel's clock (10 ms steps), for the start-up trace. */
function sinceExec(): string {
  try {
    const [up] = readFileSync("/proc/uptime", "utf8").split(" ");
    // Field 22 of /proc/self/stat, after the parenthesised command name: the start time in clock ticks (USER_HZ, 100).
    const started = Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ")[19]) / 100;
    return `${(Number(up) - started).toFixed(2)} s after exec`;
  } catch {
    return "exec time unknown";
  }
}
