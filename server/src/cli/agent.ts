/** `vmc agent`: the guest agent (agent/src), also usable on a host. */
export async function main(argv: string[]): Promise<number> {
  return (await import("@vmc/agent/cli")).main(argv);
}
