/** The plugins a `vmc agent` process mounts by default. */
import type { AgentPlugin } from "./plugin";

export function defaultPlugins(): AgentPlugin[] {
  return [];
}
