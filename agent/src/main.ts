/** The guest agent's entry point when run as its own bundle (dist/agent.mjs): `node agent.mjs [flags]`. */
import cluster from "node:cluster";
import { lookup } from "node:dns";
import { parseArgs } from "node:util";
import { startupSnapshot } from "node:v8";
import { main } from "./cli";
import { warmUp } from "./warm-up";

function run(argv: string[]): void {
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(`vmc agent: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}

// The guest image builds a V8 startup snapshot of this bundle (docs/GUEST.md): evaluated once at
// build time, started by `node --snapshot-blob`, whose argv has no script name.
if (startupSnapshot?.isBuildingSnapshot()) {
  // Node loads parts of itself on first use, each costly under TCG (~0.1 s for these under
  // qemu-user): used here, they are in the snapshot. util.parseArgs' implementation, and what
  // net.Server#listen asks on the agent's start: dns to look up the host, cluster whether this is a worker.
  parseArgs({ args: [], options: {} });
  void [cluster.isPrimary, lookup];
  startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
  // The start path once, up to a HELLO to a loopback broker, before the snapshot is taken (Node
  // takes it when the event loop is empty): the functions it runs keep their bytecode in the
  // snapshot, so the guest's agent does not parse and compile them at every boot (~0.3 s under
  // TCG). A failed warm-up fails the build: the image then does without the snapshot, visibly.
  void warmUp([]).then((helloSent) => {
    if (!helloSent) process.exitCode = 1;
  });
} else run(process.argv.slice(2));
