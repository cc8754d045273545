/**
 * `vmc broker [--port P] [--host H] [--data DIR] [--users FILE]`: runs the embedded STOMP broker
 * in the foreground, logging to stderr. SIGTERM/SIGINT shut it down cleanly (journal flushed
 * and fsynced). Writes `<data>/broker.pid` while running.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import { Broker, type BrokerLimits } from "../broker/broker";
import { loadUsers } from "../broker/auth";
import { vmcHome } from "../config";

const usage = `usage: vmc broker [--port P] [--host H] [--data DIR] [--users FILE]
  --port P              listen port (default 61613)
  --host H              listen address (default 127.0.0.1)
  --data DIR            journal directory (default $VMC_HOME/broker)
  --users FILE          users JSON {"users":[{"login":..,"passcode":..}]} (default DIR/users.json;
                        none: guest/guest from loopback only)
  --max-body BYTES      largest frame body (default 64 MiB)
  --max-connections N   (default 10000)
  --connect-timeout MS  time allowed before CONNECT (default 10000)
  --max-queued-bytes B  messages held before SENDs are refused (default 1 GiB)
  --journal-compact-bytes B  compact a mostly-dead journal from this size (default 16 MiB)`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: "61613" },
      host: { type: "string", default: "127.0.0.1" },
      data: { type: "string" },
      users: { type: "string" },
      "max-body": { type: "string" },
      "max-connections": { type: "string" },
      "connect-timeout": { type: "string" },
      "max-queued-bytes": { type: "string" },
      "journal-compact-bytes": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid --port '${values.port}'`);
  const dataDir = values.data ?? join(vmcHome(), "broker");
  mkdirSync(dataDir, { recursive: true });
  const limits: Partial<BrokerLimits> = {};
  const num = (name: string, v: string | undefined, key: keyof BrokerLimits) => {
    if (v === undefined) return;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`invalid --${name} '${v}'`);
    limits[key] = n;
  };
  num("max-body", values["max-body"], "maxBodyBytes");
  num("max-connections", values["max-connections"], "maxConnections");
  num("connect-timeout", values["connect-timeout"], "connectTimeoutMs");
  num("max-queued-bytes", values["max-queued-bytes"], "maxQueuedBytes");
  num("journal-compact-bytes", values["journal-compact-bytes"], "journalCompactBytes");
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} vmc broker: ${line}\n`);
  const users = loadUsers(values.users ?? join(dataDir, "users.json"));
  const broker = new Broker({
    host: values.host,
    port,
    dataDir,
    users,
    limits,
    log,
    onFatal: (err) => {
      log(`fatal: the journal failed (${err.message}); exiting so that no receipt claims a write the disk refused`);
      process.exit(70);
    },
  });
  const bound = await broker.start();
  log(`listening on ${values.host}:${bound}, data ${dataDir}, ${users.users ? `${users.users.size} configured user(s)` : "guest/guest from loopback only"}`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: shutting down`);
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  await broker.close();
  log("stopped");
  return 0;
}
