/**
 * `vmc serve --stdio [--broker URL]`: the controller API for the editor, as a
 * vscode-languageserver connection on stdin/stdout (LSP framing; `initialize`, `shutdown` and
 * `exit` as in LSP). The same handlers as `vmc rpc`; logs go to stderr.
 */
import { parseArgs } from "node:util";
import { runStdioServer } from "../rpc/stdio-server";

const USAGE = `usage: vmc serve --stdio [--broker URL] [--max-message-bytes N]
The controller API (docs/PROTOCOL.md) as an LSP-framed connection on stdin/stdout.`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      stdio: { type: "boolean", default: false },
      broker: { type: "string" },
      "max-message-bytes": { type: "string" },
      // vscode-languageclient may pass --clientProcessId=N: accepted (vscode-languageserver watches it).
      clientProcessId: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.stdio) {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  const max = values["max-message-bytes"] === undefined ? undefined : Number(values["max-message-bytes"]);
  if (max !== undefined && !(Number.isInteger(max) && max > 0)) {
    console.error("vmc serve: --max-message-bytes is a positive integer");
    return 2;
  }
  return runStdioServer({ kind: "serve", framing: "lsp", ...(values.broker ? { brokerUrl: values.broker } : {}), ...(max ? { maxMessageBytes: max } : {}) });
}
