/** `vmc agent`: the guest agent (agent/src), also usable on a host. */
export async function main(argv: string[]): Promise<number> {
  if (argv[0] === "install") return (await import("./agent-install")).main(argv.slice(1));
  return (await import("@vmc/agent/cli")).main(argv);
}
