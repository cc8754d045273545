import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { parseKernelCmdline, resolveSettings } from "@vmc/agent/settings";

const KEY = "CqK8GBfOtXI1dBNUB1bXExh0kQAaUpO6sRORiq11kx8=";

it("reads vmc_* words from a kernel command line, keeping '=' inside values", () => {
  const words = parseKernelCmdline(`console=ttyS0 quiet i8042.noaux vmc_id=vm.1.2.7 vmc_broker=stomp://10.0.2.100:61613 vmc_key=${KEY} vmc_labels=role=worker,zone=a\n`);
  assert.deepEqual(words, { id: "vm.1.2.7", broker: "stomp://10.0.2.100:61613", key: KEY, labels: "role=worker,zone=a" });
});

it("takes flags over the config file over env over the kernel command line", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmc-settings-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cmdline = join(dir, "cmdline");
  writeFileSync(cmdline, `vmc_id=vm.from.cmdline vmc_broker=10.0.2.100:61613 vmc_key=${KEY} vmc_labels=a=1`);
  const config = join(dir, "agent.json");
  writeFileSync(config, JSON.stringify({ broker: "stomp://config:1" }));

  const fromCmdline = resolveSettings([], { env: { VMC_HOME: dir }, cmdlinePath: cmdline });
  assert.equal(fromCmdline.id, "vm.from.cmdline");
  assert.equal(fromCmdline.brokerUrl, "stomp://10.0.2.100:61613");
  assert.equal(fromCmdline.key, KEY);
  assert.deepEqual(fromCmdline.labels, { a: "1" });
  assert.equal(fromCmdline.inVm, true);
  assert.equal(fromCmdline.stateDir, join(dir, "agents", "vm.from.cmdline"));

  const fromEnv = resolveSettings([], { env: { VMC_AGENT_ID: "env.id", VMC_BROKER: "stomp://env:2", VMC_LABELS: "b=2,c=3" }, cmdlinePath: cmdline });
  assert.equal(fromEnv.id, "env.id");
  assert.equal(fromEnv.brokerUrl, "stomp://env:2");
  assert.deepEqual(fromEnv.labels, { b: "2", c: "3" });
  assert.equal(fromEnv.inVm, false);

  const fromFlags = resolveSettings(["--id", "flag.id", "--config", config, "--label", "x=y", "--heartbeat-ms", "500"], { env: { VMC_BROKER: "stomp://env:2" }, cmdlinePath: cmdline });
  assert.equal(fromFlags.id, "flag.id");
  assert.equal(fromFlags.brokerUrl, "stomp://config:1");
  assert.deepEqual(fromFlags.labels, { x: "y" });
  assert.equal(fromFlags.heartbeatMs, 500);

  assert.throws(() => resolveSettings(["--id", "bad id!"], { env: {}, cmdlinePath: join(dir, "none") }), /agent id/);
  assert.throws(() => resolveSettings([], { env: {}, cmdlinePath: join(dir, "none") }), /no agent id/);
});
