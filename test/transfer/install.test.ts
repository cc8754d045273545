/** `vmc agent install` over real SSH: copies dist/agent.mjs, starts it (nohup here), waits for HELLO. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, vmcBundle, type EmbeddedBroker } from "../harness/embedded-broker";
import { freePort } from "../harness/ports";
import { sshdInstalled, startSshd, type Sshd } from "./sshd";
import { tempDir } from "./util";

describe("vmc agent install", () => {
  const dir = tempDir();
  let sshd: Sshd | undefined;
  let broker: EmbeddedBroker | undefined;
  const installDir = join(dir.path, "installed");

  after(async () => {
    const pidFile = join(installDir, "agent.pid");
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGKILL");
      } catch {
        // already gone
      }
    }
    await sshd?.stop();
    await broker?.stop();
    dir.remove();
  });

  test("installs, starts and sees the agent's HELLO", async (t) => {
    if (!requireComponent(t, "openssh-server", sshdInstalled())) return;
    sshd = await startSshd();
    broker = await startEmbeddedBroker({ port: await freePort() });
    const home = join(dir.path, "home");
    mkdirSync(home);
    const args = [vmcBundle, "agent", "install", "inst.1", "--ssh", `${sshd.username}@${sshd.host}:${sshd.port}`, "--key", sshd.keyPath, "--dir", installDir, "--json", "--timeout", "60"];
    const child = spawn(process.execPath, args, { env: { ...process.env, VMC_HOME: home, VMC_BROKER: broker.url }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    assert.equal(code, 0, err);
    const result = JSON.parse(out) as { agentId: string; service: string; dataEndpoint?: { port: number } };
    assert.equal(result.agentId, "inst.1");
    assert.equal(result.service, existsSync("/run/systemd/system") && process.getuid?.() === 0 ? "systemd" : "nohup");
    assert.ok(result.dataEndpoint && result.dataEndpoint.port > 0, "the installed agent offers a data endpoint");
    assert.ok(existsSync(join(installDir, "agent.mjs")));
    assert.match(readFileSync(join(installDir, "agent.env"), "utf8"), /VMC_CONTROLLER_KEY=/);
  });
});
