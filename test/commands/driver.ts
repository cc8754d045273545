/**
 * A controller process for the commands tests: a leased (or plain) fleet and a CommandService,
 * driven by one JSON request per line on stdin; answers and events one JSON object per line on
 * stdout. `node --import tsx test/commands/driver.ts --broker URL [--lease] [--vm AGENT=VM]... [--result-grace-ms N]`
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { CommandService, preferredSlots } from "@vmc/server/controller/commands";
import { openFleetSession } from "@vmc/server/fleet/session";
import { acquireControllerLease, LEASED_REPLY_EXPIRES_MS } from "@vmc/server/store/controller-lease";

const { values } = parseArgs({
  options: {
    broker: { type: "string" },
    lease: { type: "boolean", default: false },
    vm: { type: "string", multiple: true, default: [] },
    "result-grace-ms": { type: "string" },
    "write-interval-ms": { type: "string" },
  },
});
const home = process.env.VMC_HOME!;
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const vmOf = new Map(values.vm!.map((kv) => kv.split("=") as [string, string]));

const lease = values.lease ? acquireControllerLease(home, { prefer: preferredSlots(home) }) : undefined;
const session = await openFleetSession({
  brokerUrl: values.broker!,
  home,
  log: (m) => process.stderr.write(`fleet: ${m}\n`),
  ...(lease ? { instanceId: lease.instanceId, replyExpiresMs: LEASED_REPLY_EXPIRES_MS } : {}),
  ...(values["result-grace-ms"] ? { timings: { resultGraceMs: Number(values["result-grace-ms"]) } } : {}),
});
await session.fleet.discover({ firstAnswerMs: 300, quietMs: 100 });
const service = await CommandService.open({
  home,
  fleet: session.fleet,
  vms: { vmOfAgent: (a) => vmOf.get(a) },
  log: (m) => process.stderr.write(`commands: ${m}\n`),
  ...(values["write-interval-ms"] ? { writeIntervalMs: Number(values["write-interval-ms"]) } : {}),
  events: {
    started: (record) => say({ event: "started", record }),
    output: (event) => say({ event: "output", output: event }),
    finished: (record) => say({ event: "finished", record }),
  },
});
say({ ready: { pid: process.pid, instanceId: session.fleet.instanceId, slot: lease?.slot ?? null } });

type Request = { id: number; op: string; params?: any };
const ops: Record<string, (p: any) => Promise<unknown>> = {
  run: (p) => service.run(p),
  get: (p) => service.get(p.id),
  list: (p) => service.list(p),
  cancel: (p) => service.cancel(p.id),
  input: (p) => service.input(p).then(() => null),
  vmState: async (p) => service.vmStateChanged({ name: p.name, state: p.state, previous: null, cause: "test", at: Date.now() }),
  restored: async (p) => service.snapshotRestored(p.vm, p.agentId, p.takenAt, Date.now(), p.snapshot),
  waitAgent: async (p) => {
    const deadline = Date.now() + (p.timeoutMs ?? 20_000);
    while (Date.now() < deadline) {
      if (session.fleet.registry.get(p.agentId)?.state === "online") return true;
      await session.fleet.discover({ firstAnswerMs: 500, quietMs: 50 });
    }
    return false;
  },
  exit: async () => {
    await service.close();
    await session.close();
    lease?.release();
    setImmediate(() => process.exit(0));
    return null;
  },
};

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const req = JSON.parse(line) as Request;
  const op = ops[req.op];
  if (!op) {
    say({ id: req.id, error: { message: `unknown op ${req.op}` } });
    continue;
  }
  op(req.params).then(
    (result) => say({ id: req.id, result: result ?? null }),
    (e: { code?: number; message?: string }) => say({ id: req.id, error: { code: e.code, message: e.message } }),
  );
}
