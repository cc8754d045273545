/** Where state lives and which broker to use: one place for every command and test. */
import { homedir } from "node:os";
import { join } from "node:path";

export const DEFAULT_BROKER = "stomp://127.0.0.1:61613";

/** `$VMC_HOME`, default `~/.local/state/vmc`. */
export function vmcHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.VMC_HOME || join(env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "vmc");
}

/** `--broker` flag, else `$VMC_BROKER`, else the embedded broker's default address. */
export function brokerUrl(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.VMC_BROKER || DEFAULT_BROKER;
}

/** Parsed `stomp://[user:pass@]host:port` (also `tcp://`). */
export interface BrokerAddress {
  host: string;
  port: number;
  login?: string;
  passcode?: string;
}

export function parseBrokerUrl(url: string): BrokerAddress {
  const u = new URL(url);
  if (u.protocol !== "stomp:" && u.protocol !== "tcp:") throw new Error(`unsupported broker URL '${url}': use stomp://host:port`);
  const address: BrokerAddress = { host: u.hostname || "127.0.0.1", port: u.port ? Number(u.port) : 61613 };
  if (u.username) address.login = decodeURIComponent(u.username);
  if (u.password) address.passcode = decodeURIComponent(u.password);
  return address;
}
