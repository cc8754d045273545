/** The guest agent's entry point when run as its own bundle (dist/agent.mjs): `node agent.mjs [flags]`. */
import { startupSnapshot } from "node:v8";
import { main } from "./cli";

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
if (startupSnapshot?.isBuildingSnapshot()) startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
else run(process.argv.slice(2));
