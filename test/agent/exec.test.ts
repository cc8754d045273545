import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { eventually, forEachBroker } from "./brokers";
import { b64, spawnAgent, tempDir, TestController, unb64 } from "./fixture";

/** Resident set of `pid`, and its peak (VmHWM), in bytes. */
function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

forEachBroker("agent executes commands", (brokers) => {
  async function ready(t: import("node:test").TestContext) {
    const broker = brokers.need(t);
    if (!broker) return undefined;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey, labels: ["role=worker", "zone=a"] });
    const hello = await controller.hello(id);
    return { broker, controller, id, agent, hello };
  }

  it("announces itself, runs argv without a shell and reports stdout, stderr and the exit code", async (t) => {
    const r = await ready(t);
    if (!r) return;
    assert.deepEqual(r.hello.labels, { role: "worker", zone: "a" });
    assert.equal(r.hello.capabilities.exec, true);
    assert.equal(r.hello.capabilities.transfer, true);
    assert.equal(r.hello.dataEndpoint?.host, "127.0.0.1");
    assert.ok((r.hello.dataEndpoint?.port ?? 0) > 0, "a host agent's data endpoint listens on an ephemeral port");
    const cmd = r.controller.run(r.id, { argv: ["sh", "-c", 'echo "out $0"; echo err >&2; exit 3', "$HOME"] });
    await r.controller.send(r.id, cmd);
    const result = await r.controller.result(cmd.cmdId);
    assert.equal(result.status, "exited");
    assert.equal(result.exitCode, 3);
    assert.equal(result.signal, null);
    assert.equal(unb64(result.stdout.data), "out $HOME\n");
    assert.equal(unb64(result.stderr.data), "err\n");
    assert.equal(result.replayed, false);
    assert.equal(r.controller.stream(cmd.cmdId, "stdout").text, "out $HOME\n");
    assert.equal(r.controller.stream(cmd.cmdId, "stderr").text, "err\n");
    assert.ok(result.resources && result.resources.wallMs >= 0);
    // Commands do not cost the agent its connection (a second ACK of a CMD_RUN used to make the
    // broker close it after every command).
    const second = r.controller.run(r.id, { argv: ["true"] });
    await r.controller.send(r.id, second);
    assert.equal((await r.controller.result(second.cmdId)).exitCode, 0);
    assert.doesNotMatch(r.agent.stderr(), /broker ERROR|unknown delivery tag/);
    assert.equal(r.agent.stderr().match(/connected to /g)?.length, 1, r.agent.stderr());
  });

  it("runs through /bin/sh only with shell:true, reports a signal, and fails to start a missing program", async (t) => {
    const r = await ready(t);
    if (!r) return;
    const shell = r.controller.run(r.id, { argv: ["echo $0-$1; kill -TERM $$", "a", "b"], shell: true });
    const missing = r.controller.run(r.id, { argv: ["/nonexistent/program"] });
    await r.controller.send(r.id, shell);
    await r.controller.send(r.id, missing);
    const s = await r.controller.result(shell.cmdId);
    assert.equal(unb64(s.stdout.data), "a-b\n");
    assert.equal(s.signal, "SIGTERM");
    assert.equal(s.exitCode, null);
    const m = await r.controller.result(missing.cmdId);
    assert.equal(m.status, "failedToStart");
    assert.match(m.error ?? "", /nonexistent/);
  });

  it("passes env and cwd, and stdin given up front or streamed with CMD_INPUT", async (t) => {
    const r = await ready(t);
    if (!r) return;
    const dir = realpathSync(tempDir(t, "vmc-agent-cwd-"));
    const envCwd = r.controller.run(r.id, { argv: ["sh", "-c", 'printf "%s|" "$FOO"; pwd'], env: { FOO: "bar baz" }, cwd: dir });
    const upFront = r.controller.run(r.id, { argv: ["cat"], stdin: b64("line one\nline two\n") });
    const streamed = r.controller.run(r.id, { argv: ["sh", "-c", "read a; echo got:$a; cat"], stdinStream: true });
    for (const c of [envCwd, upFront, streamed]) await r.controller.send(r.id, c);
    const input = (seq: number, data: string, eof = false) =>
      r.controller.sign({ type: "CMD_INPUT" as const, cmdId: streamed.cmdId, agentId: r.id, seq, data: b64(data), eof, issuedAt: Date.now() });
    // Out of order on purpose: seq 1 is held until seq 0 arrives; a duplicate seq 0 is ignored.
    await r.controller.send(r.id, input(1, "second\n"));
    await r.controller.send(r.id, input(0, "first\n"));
    await r.controller.send(r.id, input(0, "first\n"));
    await r.controller.send(r.id, input(2, "", true));
    assert.equal(unb64((await r.controller.result(envCwd.cmdId)).stdout.data), `bar baz|${dir}\n`);
    assert.equal(unb64((await r.controller.result(upFront.cmdId)).stdout.data), "line one\nline two\n");
    const s = await r.controller.result(streamed.cmdId);
    assert.equal(unb64(s.stdout.data), "got:first\nsecond\n");
    assert.equal(s.exitCode, 0);
  });

  it("runs each command in a wrapper spawned ahead, with argv, env and cwd passed verbatim", async (t) => {
    const r = await ready(t);
    if (!r) return;
    const waitingWrapper = () =>
      eventually(
        "a wrapper spawned ahead",
        () => readdirSync(`/proc/${r.agent.pid}/task`).flatMap((tid) => readFileSync(`/proc/${r.agent.pid}/task/${tid}/children`, "utf8").split(" ").filter(Boolean).map(Number))[0],
        15_000,
      );
    const dir = join(realpathSync(tempDir(t, "vmc-agent-pool-")), "it's a \"dir\" $(x)");
    mkdirSync(dir);
    const words = ["it's", "$(touch /tmp/vmc-pwned)", "a\nb", "`id`", "-n", "", "back\\slash", "ünïcode ✓", "  spaced  "];
    const value = "quote ' double \" dollar $HOME\nnew line";
    // Spawned after the HELLO, then after each command once the agent is idle again.
    for (const round of [1, 2]) {
      const ahead = await waitingWrapper();
      const cmd = r.controller.run(r.id, { argv: ["sh", "-c", 'echo $PPID; printf "<%s>\\n" "$@"; printf "%s|" "$V"; pwd', "sh", ...words], env: { V: value }, cwd: dir });
      await r.controller.send(r.id, cmd);
      const result = await r.controller.result(cmd.cmdId);
      assert.equal(result.exitCode, 0, unb64(result.stderr.data));
      assert.equal(unb64(result.stdout.data), `${ahead}\n${words.map((w) => `<${w}>\n`).join("")}${value}|${dir}\n`, `round ${round}`);
    }
  });

  it("kills the whole process group on timeout and on CMD_CANCEL", async (t) => {
    const r = await ready(t);
    if (!r) return;
    const dir = tempDir(t, "vmc-agent-kill-");
    // A grandchild in the same group must die too: it would print "survived" after 3 s.
    const script = `(sleep 3; echo survived > ${dir}/$0) & echo started; wait`;
    const timeout = r.controller.run(r.id, { argv: [script, "timeout"], shell: true, timeoutMs: 500 });
    const cancel = r.controller.run(r.id, { argv: [script, "cancel"], shell: true });
    const t0 = Date.now();
    await r.controller.send(r.id, timeout);
    await r.controller.send(r.id, cancel);
    await r.controller.result(timeout.cmdId, 1, 15_000).then((res) => {
      assert.equal(res.status, "timedOut");
      assert.ok(Date.now() - t0 < 10_000);
    });
    await eventually("cancel's first output", () => (r.controller.stream(cancel.cmdId, "stdout").bytes > 0 ? true : undefined), 30_000);
    await r.controller.send(r.id, r.controller.sign({ type: "CMD_CANCEL" as const, cmdId: cancel.cmdId, agentId: r.id, issuedAt: Date.now() }));
    const c = await r.controller.result(cancel.cmdId, 1, 15_000);
    assert.equal(c.status, "cancelled");
    assert.equal(unb64(c.stdout.data), "started\n");
    // Wait past the grandchildren's 3 s: neither may have written its file.
    const sentinel = r.controller.run(r.id, { argv: ["sleep", "3.5"] });
    await r.controller.send(r.id, sentinel);
    await r.controller.result(sentinel.cmdId, 1, 20_000);
    for (const name of ["timeout", "cancel"]) assert.throws(() => readFileSync(`${dir}/${name}`), /ENOENT/, `${name}: a grandchild survived`);
  });

  it("measures CPU per command while commands overlap", async (t) => {
    const r = await ready(t);
    if (!r) return;
    // Burns 1 s of its own CPU time (not wall time: the machine may be loaded), in a grandchild of the wrapper.
    const burnJs = "const c = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; }; while (c() < 1000);";
    const burn = r.controller.run(r.id, { argv: ["sh", "-c", 'node -e "$0"; true', burnJs], env: { PATH: `${process.execPath.replace(/\/node$/, "")}:/usr/bin:/bin` } });
    const sleeper = r.controller.run(r.id, { argv: ["sleep", "1.5"] });
    await r.controller.send(r.id, burn);
    await r.controller.send(r.id, sleeper);
    const b = await r.controller.result(burn.cmdId);
    const s = await r.controller.result(sleeper.cmdId);
    assert.ok(b.resources && s.resources, "resources reported");
    const burnCpu = b.resources.cpuUserMs + b.resources.cpuSystemMs;
    const sleepCpu = s.resources.cpuUserMs + s.resources.cpuSystemMs;
    // `times` counts clock ticks (10 ms), user and system each rounded down: up to 20 ms below the burner's own count.
    assert.ok(burnCpu >= 980, `burner reported ${burnCpu} ms of CPU, it used at least 1000 ms`);
    assert.ok(burnCpu < 2500, `burner reported ${burnCpu} ms of CPU, far more than the ~1 s it used`);
    assert.ok(sleepCpu < 100, `sleeper reported ${sleepCpu} ms of CPU (a diff of RUSAGE_CHILDREN would show the burner's)`);
    assert.ok(b.resources.peakRssBytes > 10 * 1024 * 1024, `node burner peak RSS ${b.resources.peakRssBytes}`);
  });
  it("streams 200 MB of output in order with agent memory well below the volume and a bounded tail", async (t) => {
    const broker = brokers.need(t);
    if (!broker) return;
    const controller = await TestController.create(t, broker.url);
    const id = `test.${randomUUID().slice(0, 8)}`;
    const agent = await spawnAgent(t, { brokerUrl: broker.url, id, publicKey: controller.keys.publicKey });
    await controller.hello(id);
    const idle = memory(agent.pid);
    // 200 MB: an agent that kept its output would grow by at least that much, while a streaming
    // one grows by transient garbage that stays well under it (measured ~75 MiB at 200 MB, ~96 at 300).
    const megabytes = Number(process.env.VMC_TEST_OUTPUT_MB ?? 200);
    const total = megabytes * 1000 * 1000;
    const cmd = controller.run(id, { argv: ["head", "-c", String(total), "/dev/zero"], tailBytes: 4096 });
    await controller.send(id, cmd);
    let sampledPeak = 0;
    const sampler = setInterval(() => {
      try {
        sampledPeak = Math.max(sampledPeak, memory(agent.pid).rss);
      } catch {
        // exited
      }
    }, 50);
    t.after(() => clearInterval(sampler));
    const result = await controller.result(cmd.cmdId, 1, 180_000);
    clearInterval(sampler);
    const { hwm } = memory(agent.pid);
    const stdout = controller.stream(cmd.cmdId, "stdout");
    assert.equal(result.status, "exited");
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout.totalBytes, total);
    assert.equal(result.stdout.truncated, true);
    assert.equal(Buffer.from(result.stdout.data, "base64").length, 4096);
    // Every CMD_OUTPUT precedes the result on the same destination: all bytes are in, in order.
    await eventually("all output", () => (stdout.bytes === total ? true : undefined), 10_000);
    assert.ok(stdout.contiguous, "offsets have gaps (output lost)");
    // At-least-once: a reconnect may re-send messages; each seq first appears in order.
    const seqs = [...new Set(controller.output.get(cmd.cmdId)?.seqs ?? [])];
    assert.deepEqual(seqs, seqs.map((_, i) => i), "seq is not 0, 1, 2, ...");
    const growth = hwm - idle.rss;
    t.diagnostic(`agent RSS idle ${(idle.rss / 2 ** 20).toFixed(1)} MiB, peak ${(hwm / 2 ** 20).toFixed(1)} MiB (sampled ${(sampledPeak / 2 ** 20).toFixed(1)} MiB), ${seqs.length} CMD_OUTPUT messages`);
    assert.ok(growth < 0.6 * total, `agent memory grew by ${(growth / 2 ** 20).toFixed(1)} MiB while streaming ${megabytes} MB`);
  });
});
