/**
 * A fleet for one short-lived command-line process: brings the broker up when it is the
 * default one and nothing answers (see broker/ondemand), connects, loads or creates the
 * controller key, and opens the {@link Fleet}.
 */
import { ensureBroker } from "../broker/ondemand";
import { BusClient } from "../bus/client";
import { brokerUrl as resolveBrokerUrl, vmcHome } from "../config";
import { loadOrCreateControllerKeys } from "../store/keys";
import { Fleet, type FleetOptions } from "./fleet";

export interface FleetSession {
  fleet: Fleet;
  bus: BusClient;
  close(): Promise<void>;
}

export interface FleetSessionOptions extends Partial<Omit<FleetOptions, "bus" | "keys">> {
  /** `--broker` flag; default `$VMC_BROKER`, else the embedded broker's address. */
  brokerUrl?: string;
  /** `$VMC_HOME`; default from the environment. */
  home?: string;
  /** Name in the bus client's log lines. */
  name?: string;
  /** Bound on reaching the broker (default 10 000 ms). */
  connectTimeoutMs?: number;
}

export async function openFleetSession(options: FleetSessionOptions = {}): Promise<FleetSession> {
  const url = resolveBrokerUrl(options.brokerUrl);
  const home = options.home ?? vmcHome();
  await ensureBroker(url, { home });
  const keys = loadOrCreateControllerKeys(home);
  const bus = new BusClient({ brokerUrl: url, name: options.name ?? "vmc" });
  try {
    await bus.connect(options.connectTimeoutMs ?? 10_000);
    const fleet = await Fleet.open({ ...options, bus, keys });
    return {
      fleet,
      bus,
      close: async () => {
        await fleet.close();
        await bus.close();
      },
    };
  } catch (e) {
    await bus.close();
    throw e;
  }
}
