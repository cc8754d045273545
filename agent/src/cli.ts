/**
 * `vmc agent ...` and `node agent.mjs ...`: resolve settings, start the agent, run until
 * SIGTERM/SIGINT, then say BYE and exit.
 */
import { readControllerPublicKey } from "@vmc/server/store/keys";
import { vmcHome } from "@vmc/server/config";
import { startAgent } from "./agent";
import { identityWaitRequested, onRestored, waitForIdentity } from "./identity-port";
import { defaultPlugins } from "./plugins";
import { AGENT_USAGE, resolveSettings } from "./settings";
import { warmUp } from "./warm-up";

export async function main(argv: string[]): Promise<number> {
  if (process.env.VMC_AGENT_TRACE) process.stderr.write("vmc agent: main\n");
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
