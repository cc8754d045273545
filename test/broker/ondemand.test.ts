// ensureBroker: starts one detached `vmc broker` when nothing answers at the default address,
// reuses a running one, and concurrent callers end up with a single broker. The default
// address is injected (a free port) so the test never touches 61613.
import { after, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ensureBroker } from "@vmc/server/broker/ondemand";
import { requireComponent } from "../harness/components";
import { freePort } from "../harness/ports";
import { vmcBundle } from "../harness/embedded-broker";
import { RawClient } from "./raw-client";

const pids: number[] = [];
const dirs: string[] = [];
after(() => {
  for (const pid of pids) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

it("starts a detached broker once, then reuses it; a non-default URL is left alone", async () => {
  const home = mkdtempSync(join(tmpdir(), "vmc-home-"));
  dirs.push(home);
  const url = `stomp://127.0.0.1:${await freePort()}`;
  const opts = { defaultUrl: url, home, bundle: vmcBundle };
  assert.deepEqual(await ensureBroker(`stomp://127.0.0.1:${await freePort()}`, opts), { started: false });
  assert.deepEqual(await ensureBroker(url, opts), { started: true });
  const pid = Number(readFileSync(join(home, "broker", "broker.pid"), "utf8"));
  pids.push(pid);
  assert.ok(alive(pid));
  assert.match(readFileSync(join(home, "broker", "broker.log"), "utf8"), /listening on/);
  const c = await RawClient.login(Number(new URL(url).port));
  c.destroy();
  assert.deepEqual(await ensureBroker(url, opts), { started: false });
  assert.equal(Number(readFileSync(join(home, "broker", "broker.pid"), "utf8")), pid, "same broker");
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 5000;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!alive(pid), "SIGTERM stops it");
  assert.ok(!existsSync(join(home, "broker", "broker.pid")), "clean shutdown removes the pid file");
});

it("concurrent callers race safely: exactly one broker is started", async () => {
  const home = mkdtempSync(join(tmpdir(), "vmc-home-"));
  dirs.push(home);
  const url = `stomp://127.0.0.1:${await freePort()}`;
  const opts = { defaultUrl: url, home, bundle: vmcBundle };
  const results = await Promise.all([1, 2, 3, 4].map(() => ensureBroker(url, opts)));
  const pid = Number(readFileSync(join(home, "broker", "broker.pid"), "utf8"));
  pids.push(pid);
  assert.equal(results.filter((r) => r.started).length, 1, JSON.stringify(results));
  const c = await RawClient.login(Number(new URL(url).port));
  await c.withReceipt("SEND", { destination: "/queue/x" }, "still serving");
  c.destroy();
});

it("on the real default address (61613) inside an isolated network namespace", async (t) => {
  const unshare = spawnSync("unshare", ["--net", "sh", "-c", "ip link set lo up"]);
  if (!requireComponent(t, "unshare --net and ip (root)", unshare.status === 0, "run as root; util-linux and iproute2 (scripts/provision)")) return;
  const home = mkdtempSync(join(tmpdir(), "vmc-home-"));
  dirs.push(home);
  const script = fileURLToPath(new URL("./fixtures/ensure-default.ts", import.meta.url));
  const child = spawn("unshare", ["--net", "sh", "-c", `ip link set lo up && exec "${process.execPath}" --import tsx "${script}"`], {
    env: { ...process.env, VMC_HOME: home, VMC_BROKER: "" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
  const pidFile = join(home, "broker", "broker.pid");
  if (existsSync(pidFile)) pids.push(Number(readFileSync(pidFile, "utf8")));
  assert.equal(code, 0, err);
  assert.deepEqual(JSON.parse(out.trim().split("\n").pop()!), { first: { started: true }, second: { started: false }, answers: true });
  assert.match(readFileSync(join(home, "broker", "broker.log"), "utf8"), /listening on 127\.0\.0\.1:61613/);
});
