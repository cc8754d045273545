/**
 * `vmc`: one entry point for the controller, the embedded broker and the agent.
 * Each subcommand lives in its own module and is loaded only when used.
 */
type Subcommand = { summary: string; run: (argv: string[]) => Promise<number> };

const subcommands: Record<string, Subcommand> = {
  broker: { summary: "run the embedded STOMP broker", run: async (a) => (await import("./broker")).main(a) },
  run: { summary: "run a command on agents: vmc run TARGET [options] -- CMD [ARG...]", run: async (a) => (await import("./run")).main(a) },
  agent: { summary: "run the guest agent: vmc agent --id ID [--broker URL] [--label k=v]...", run: async (a) => (await import("./agent")).main(a) },
  agents: { summary: "list the agents that answer now", run: async (a) => (await import("./agents")).main(a) },
  cp: { summary: "copy files to/from agents and VMs: vmc cp [-r] SRC... DST (NAME:/path)", run: async (a) => (await import("./cp")).main(a) },
  image: { summary: "build the bootable guest image (vmc image build)", run: async (a) => (await import("./image")).main(a) },
  vm: { summary: "virtual machines: vmc vm ls|create|start|stop|pause|resume|rm|snapshot|restore|snapshots", run: async (a) => (await import("./vm")).main(a) },
  rpc: { summary: "the controller API as JSON-RPC on stdio: vmc rpc [--framing lsp|ndjson]", run: async (a) => (await import("./rpc")).main(a) },
  serve: { summary: "the controller API for the editor: vmc serve --stdio", run: async (a) => (await import("./serve")).main(a) },
  demo: { summary: "the main job: boot a VM, run a command, snapshot, change, restore", run: async (a) => (await import("./demo")).main(a) },
};

function usage(): string {
  const width = Math.max(...Object.keys(subcommands).map((k) => k.length));
  const lines = Object.entries(subcommands).map(([name, s]) => `  ${name.padEnd(width)}  ${s.summary}`);
  return `usage: vmc <command> [options]\n\ncommands:\n${lines.join("\n")}\n\nEvery command takes --broker URL (env VMC_BROKER, default stomp://127.0.0.1:61613).`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "-h" || name === "--help" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const sub = subcommands[name];
  if (!sub) {
    console.error(`vmc: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return sub.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`vmc: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
