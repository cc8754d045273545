/** The guest agent's entry point when run as its own bundle (dist/agent.mjs): `node agent.mjs [flags]`. */
import { main } from "./cli";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`vmc agent: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
