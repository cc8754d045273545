/**
 * `vmc rpc [--framing lsp|ndjson] [--broker URL]`: the controller API (docs/PROTOCOL.md) as
 * JSON-RPC 2.0 on stdin/stdout, for programs such as the BOINC wrapper. `lsp` (default):
 * `Content-Length` headers as in LSP; `ndjson`: one JSON object per line. Logs go to stderr.
 */
import { parseArgs } from "node:util";
import { runStdioServer } from "../rpc/stdio-server";

const USAGE = `usage: vmc rpc [--framing lsp|ndjson] [--broker URL] [--max-message-bytes N]
JSON-RPC 2.0 on stdin/stdout (see docs/PROTOCOL.md); logs on stderr.`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      framing: { type: "string", default: "lsp" },
      broker: { type: "string" },
      "max-message-bytes": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.error(USAGE);
    return 0;
  }
  const framing = values.framing;
  if (framing !== "lsp" && framing !== "ndjson") {
    console.error(`vmc rpc: --framing is lsp or ndjson\n${USAGE}`);
    return 2;
  }
  const max = values["max-message-bytes"] === undefined ? undefined : Number(values["max-message-bytes"]);
  if (max !== undefined && !(Number.isInteger(max) && max > 0)) {
    console.error("vmc rpc: --max-message-bytes is a positive integer");
    return 2;
  }
  return runStdioServer({ kind: "rpc", framing, ...(values.broker ? { brokerUrl: values.broker } : {}), ...(max ? { maxMessageBytes: max } : {}) });
}
