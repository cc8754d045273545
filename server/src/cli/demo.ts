/**
 * `vmc demo`: the main job in one command. Brings up the broker, builds the guest image when
 * missing, boots a real VM (QEMU when installed, else the process driver, and says which), waits
 * for its agent, runs a command in it, snapshots it, changes a file and kills a running counter,
 * restores, and shows that the file and the counter came back. Cleans up at the end.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Destinations, PresenceMessage, type Hello } from "@vmc/protocol";
import { ensureBroker } from "../broker/ondemand";
import { brokerUrl as resolveBrokerUrl, parseBrokerUrl, vmcHome } from "../config";
import { openFleetSession, type FleetSession } from "../fleet/session";
import { defaultDriverName, driverByName } from "../hypervisors/index";
import type { Driver } from "../hypervisors/driver";
import { readControllerPublicKey } from "../store/keys";
import { resolveImage } from "./vm";

const COUNTER = "setsid sh -c 'echo $$ > /tmp/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 &";

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { broker: { type: "string" }, driver: { type: "string" }, keep: { type: "boolean", default: false }, image: { type: "string" } },
  });
  const home = vmcHome();
  const url = resolveBrokerUrl(values.broker);
  const t0 = Date.now();
  const step = (n: number, msg: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${n}. ${msg}`);
  const detail = (msg: string) => console.log(`           ${msg.replaceAll("\n", "\n           ")}`);

  step(1, `broker ${url}`);
  const { started: brokerStarted } = await ensureBroker(url, { home });
  detail(brokerStarted ? "started the embedded broker (detached; stopped again at the end)" : "a broker already answers there");

  const driverName = values.driver === "qemu" || values.driver === "process" ? values.driver : await defaultDriverName();
  const driver: Driver = driverByName(home, driverName);
  step(2, `driver: ${driverName}${driverName === "process" ? " (QEMU is not installed: the VM is a local agent process, a development stand-in without isolation)" : ""}`);
  const image = driverName === "qemu" ? await resolveImage(home, values.image, (m) => detail(`image: ${m}`)) : undefined;
  if (image) detail(`guest image ${image.id}`);

  const name = `demo-${randomBytes(3).toString("hex")}`;
  let session: FleetSession | undefined;
  try {
    session = await openFleetSession({ brokerUrl: url, home, log: () => undefined });
    const s = session;
    const hellos: (Hello & { receivedAt: number })[] = [];
    const helloWaiters = new Set<() => void>();
    const presence = s.bus.subscribeJson(Destinations.presence, PresenceMessage, (h) => {
      if (h.type !== "HELLO") return;
      hellos.push({ ...h, receivedAt: Date.now() });
      for (const w of helloWaiters) w();
    });
    await presence.ready;
    const waitHello = (since: number, timeoutMs: number) =>
      new Promise<Hello>((resolve, reject) => {
        const check = () => {
          const h = hellos.find((x) => x.agentId === name && x.receivedAt >= since);
          if (!h) return;
          helloWaiters.delete(check);
          clearTimeout(timer);
          resolve(h);
        };
        const timer = setTimeout(() => {
          helloWaiters.delete(check);
          reject(new Error(`the agent of ${name} did not say HELLO within ${timeoutMs / 1000} s${driverName === "qemu" ? ` (console: ${join(home, "vms", name, "console.log")})` : ""}`));
        }, timeoutMs);
        helloWaiters.add(check);
        check();
      });
    const sh = async (script: string, timeoutMs = 60_000): Promise<string> => {
      const run = await s.fleet.run({ target: name, argv: [script], shell: true, timeoutMs, expiresInMs: timeoutMs });
      const outcome = (await run.done).targets[0];
      if (!outcome || outcome.status !== "succeeded") throw new Error(`'${script}' failed in ${name}: ${outcome?.status} ${outcome?.reason ?? ""} ${outcome?.stderr.data.toString() ?? ""}`);
      return outcome.stdout.data.toString().trim();
    };

    const broker = parseBrokerUrl(url);
    const created = Date.now();
    const record = await driver.create({ name, ...(image ? { image } : {}), broker: { host: broker.host, port: broker.port }, controllerPublicKey: readControllerPublicKey(home) });
    step(3, `created VM ${name} in ${Date.now() - created} ms (${record.template ? "linked clone of the agent-ready template" : "linked clone of the base disk"}, ${record.memoryMiB} MiB)`);
    const booting = Date.now();
    const status = await driver.start(name);
    step(4, `started: ${status.state}${status.accel ? ` under ${status.accel.toUpperCase()}` : ""}, pid ${status.pid ?? "?"}; waiting for its agent...`);
    const hello = await waitHello(0, 180_000);
    detail(`agent ${hello.agentId} said HELLO ${Date.now() - booting} ms after start (${hello.os.platform} ${hello.os.release}, agent ${hello.agentVersion})`);

    step(5, "running a command in the VM through the bus: uname -a");
    detail(await sh("uname -a"));

    step(6, "starting a counter process and writing /var/lib/vmc/home/demo.txt = original");
    await sh(COUNTER);
    await sh("echo original > /var/lib/vmc/home/demo.txt; sync");
    detail(`counter is at ${await sh("cat /tmp/counter")}`);

    const snapAt = Date.now();
    const snap = await driver.takeSnapshot(name, "demo");
    step(7, `snapshot 'demo' taken in ${Date.now() - snapAt} ms${snap.withMemory ? ` (with memory: ${Math.round((snap.vmStateBytes ?? 0) / 1048576)} MiB of machine state)` : " (disk only)"}`);
    const atSnap = await sh("cat /tmp/counter");
    detail(`counter right after the snapshot: ${atSnap}`);

    step(8, "changing the file and killing the counter");
    detail(await sh("echo changed > /var/lib/vmc/home/demo.txt; kill $(cat /tmp/counter.pid); sleep 0.3; echo stopped > /tmp/counter; echo \"demo.txt = $(cat /var/lib/vmc/home/demo.txt), counter = $(cat /tmp/counter)\""));

    const restoreAt = Date.now();
    await driver.restoreSnapshot(name, "demo");
    step(9, `restored 'demo' in ${Date.now() - restoreAt} ms; waiting for the agent to come back...`);
    await waitHello(restoreAt, 120_000)
      .then(() => detail(`agent said HELLO again ${Date.now() - restoreAt} ms after the restore began`))
      .catch(() => detail("no new HELLO (the agent may have kept its connection); asking it anyway"));
    const after = await sh("echo \"demo.txt = $(cat /var/lib/vmc/home/demo.txt), counter = $(cat /tmp/counter)\"; kill -0 $(cat /tmp/counter.pid) 2>/dev/null && echo 'counter process: running' || echo 'counter process: gone'", 120_000);
    detail(after);
    detail(`answered ${Date.now() - restoreAt} ms after the restore began`);
    const later = await sh("sleep 1; cat /tmp/counter");
    detail(`one second later the counter is at ${later}`);
    const fileBack = after.includes("demo.txt = original");
    const counterBack = after.includes("counter process: running") && /^\d+$/.test(later);
    step(10, `${fileBack ? "the file came back" : "the file did NOT come back"}; ${counterBack ? "the running counter came back" : driver.features.snapshotsWithMemory ? "the counter did NOT come back" : "the counter did not come back (this driver's snapshots hold no memory)"}`);
    presence.unsubscribe();
    return fileBack && (counterBack || !driver.features.snapshotsWithMemory) ? 0 : 1;
  } finally {
    await session?.close().catch(() => undefined);
    if (!values.keep) {
      await driver.delete(name, { force: true }).catch(() => undefined);
      console.log(`clean-up: deleted VM ${name}${brokerStarted ? ", stopped the broker we started" : ""}`);
      if (brokerStarted) stopBroker(home);
    } else {
      console.log(`kept VM ${name} (vmc vm rm ${name} --force to remove it)`);
    }
  }
}

function stopBroker(home: string): void {
  try {
    const pid = Number.parseInt(readFileSync(join(home, "broker", "broker.pid"), "utf8"), 10);
    if (pid > 0) process.kill(pid, "SIGTERM");
  } catch {
    // already gone
  }
}
