/**
 * `vmc run` and `vmc agents` end to end: real agent processes and real `vmc` processes over the
 * embedded broker and over RabbitMQ.
 */
import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { requireComponent } from "../harness/components";
import {
  brokerAvailable,
  killStrays,
  makeHome,
  parseRunJson,
  PresenceWatcher,
  startAgentProcess,
  startBroker,
  vmc,
  type AgentProcess,
  type BrokerKind,
  type TestBroker,
  type TestHome,
} from "./helpers";

const AGENTS = [
  { id: "vm.1.1", labels: { role: "worker" } },
  { id: "vm.1.2", labels: { role: "db" } },
  { id: "vm.2.1", labels: { role: "worker" } },
];

for (const kind of ["embedded", "rabbitmq"] as BrokerKind[]) {
  describe(`vmc run over the ${kind} broker`, () => {
    let broker: TestBroker | undefined;
    let home: TestHome;
    let watcher: PresenceWatcher | undefined;
    const agents: AgentProcess[] = [];
    const present = () => brokerAvailable(kind);
    const need = (t: TestContext) => requireComponent(t, kind === "rabbitmq" ? "rabbitmq-server" : "embedded broker", present() && !!broker);
    const run = (args: string[], extra: Omit<Parameters<typeof vmc>[1], "home"> = {}) => vmc(["run", "--broker", broker!.url, ...args], { home, ...extra });

    before(async () => {
      home = makeHome();
      if (!present()) return;
      broker = await startBroker(kind);
      watcher = await PresenceWatcher.open(broker.url);
      for (const spec of AGENTS) agents.push(startAgentProcess(spec, broker.url, home));
      await watcher.waitFor(AGENTS.map((a) => a.id));
    });

    after(async () => {
      killStrays();
      await Promise.all(agents.map((a) => a.kill()));
      await watcher?.close();
      await broker?.stop();
      home.remove();
    });

    test("vmc agents lists every agent with its labels", async (t) => {
      if (!need(t)) return;
      const r = await vmc(["agents", "--json", "--broker", broker!.url], { home }).done;
      assert.equal(r.code, 0, r.stderr);
      const listed = JSON.parse(r.stdout) as Array<{ agentId: string; state: string; labels: Record<string, string> }>;
      for (const spec of AGENTS) {
        const a = listed.find((x) => x.agentId === spec.id);
        assert.ok(a, `${spec.id} missing from ${r.stdout}`);
        assert.equal(a.state, "online");
        assert.deepEqual(a.labels, spec.labels);
      }
    });

    test("a pattern reaches the agents it matches and no others; labels select too", async (t) => {
      if (!need(t)) return;
      const byGlob = parseRunJson(await run(["--json", "vm.1.*", "--", "echo", "hi"]).done);
      assert.deepEqual(byGlob.targets.map((x) => x.agentId), ["vm.1.1", "vm.1.2"]);
      for (const x of byGlob.targets) assert.equal(x.stdout, "hi\n");
      const byLabel = parseRunJson(await run(["--json", "role=worker", "--", "true"]).done);
      assert.deepEqual(byLabel.targets.map((x) => x.agentId), ["vm.1.1", "vm.2.1"]);
      const both = parseRunJson(await run(["--json", "vm.*.1&role=worker", "--", "true"]).done);
      assert.deepEqual(both.targets.map((x) => x.agentId), ["vm.1.1", "vm.2.1"]);
      assert.ok(both.ok);
    });

    test("several targets: live output prefixed with the agent id, a summary, non-zero exit when one fails", async (t) => {
      if (!need(t)) return;
      const r = await run(["vm.1.1,vm.1.2", "--shell", "--", 'echo "line $1"; [ "$1" = x ] || exit 5', "sh", "x"]).done;
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^vm\.1\.1: line x$/m);
      assert.match(r.stdout, /^vm\.1\.2: line x$/m);
      assert.match(r.stderr, /2 targets: 2 succeeded/);
      const bad = await run(["vm.1.*", "--", "sh", "-c", "exit 5"]).done;
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /vm\.1\.1\s+failed\s+5/);
      assert.match(bad.stderr, /2 targets: 2 failed/);
    });

    test("stdout, stderr and the exit code come back from one target; a signal is reported as such", async (t) => {
      if (!need(t)) return;
      const r = await run(["vm.1.1", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"]).done;
      assert.equal(r.stdout, "to-out\n");
      assert.match(r.stderr, /^to-err$/m);
      assert.equal(r.code, 7);
      const j = parseRunJson(await run(["--json", "vm.1.1", "--", "sh", "-c", "echo x; echo y >&2; exit 7"]).done);
      assert.equal(j.targets[0]!.exitCode, 7);
      assert.equal(j.targets[0]!.stdout, "x\n");
      assert.equal(j.targets[0]!.stderr, "y\n");
      assert.equal(j.targets[0]!.status, "failed");
      const sig = await run(["vm.1.1", "--", "sh", "-c", "kill -TERM $$"]).done;
      assert.equal(sig.code, 128 + 15);
      assert.match(sig.stderr, /killed by SIGTERM/);
    });

    test("stdin from a file and from our own stdin", async (t) => {
      if (!need(t)) return;
      const file = join(home.dir, "input.txt");
      const text = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join("\n");
      writeFileSync(file, text);
      const r = await run(["vm.1.2", "--stdin", file, "--", "cat"]).done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, text);
      const piped = await run(["vm.1.2", "--stdin", "-", "--", "wc", "-c"], { stdin: "12345" }).done;
      assert.equal(piped.stdout.trim(), "5");
    });

    test("stdin is streamed as it comes (CMD_INPUT), to every target, and EOF ends it", async (t) => {
      if (!need(t)) return;
      // Each line is answered before the next is written: only a streamed stdin can do that.
      const echo = 'while read l; do echo "got $l"; done; echo eof';
      for (const args of [[], ["--stdin", "-"]]) {
        const p = run(["vm.1.1", ...args, "--shell", "--", echo], { keepStdinOpen: true, timeoutMs: 40_000 });
        p.child.stdin!.write("one\n");
        await p.waitForOutput(/^got one$/m);
        p.child.stdin!.write("two\n");
        await p.waitForOutput(/^got two$/m);
        p.child.stdin!.end();
        const r = await p.done;
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "got one\ngot two\neof\n", `args ${JSON.stringify(args)}`);
      }
      const both = run(["vm.1.1,vm.1.2", "--", "wc", "-c"], { keepStdinOpen: true });
      both.child.stdin!.end("x".repeat(100_000));
      const r = await both.done;
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^vm\.1\.1: 100000$/m);
      assert.match(r.stdout, /^vm\.1\.2: 100000$/m);
    });

    test("env and cwd reach the command", async (t) => {
      if (!need(t)) return;
      const r = await run(["vm.2.1", "--env", "GREETING=hello world", "--env", "EMPTY=", "--cwd", "/usr/bin", "--", "sh", "-c", 'printf "%s|%s|%s" "$GREETING" "${EMPTY-unset}" "$(pwd)"']).done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "hello world||/usr/bin");
      const badCwd = parseRunJson(await run(["--json", "vm.2.1", "--cwd", "/no/such/dir", "--", "true"]).done);
      assert.equal(badCwd.targets[0]!.status, "failed");
      assert.equal(badCwd.targets[0]!.agentStatus, "failedToStart");
    });

    test("a timeout kills the command and is reported as timed out", async (t) => {
      if (!need(t)) return;
      const started = Date.now();
      const r = await run(["vm.1.1", "--timeout", "0.5", "--", "sh", "-c", "echo begun; sleep 30"]).done;
      assert.equal(r.code, 124, r.stderr);
      assert.equal(r.stdout, "begun\n");
      assert.match(r.stderr, /timedOut/);
      assert.ok(Date.now() - started < 20_000, "the command was not left to run its 30 s");
    });

    test("Ctrl-C cancels the command on every target", async (t) => {
      if (!need(t)) return;
      const marker = join(home.dir, `cancel-${kind}`);
      const p = run(["vm.1.*", "--shell", "--", `echo ready; sleep 30; touch ${marker}.$1`, "sh", "x"]);
      await p.waitForOutput(/vm\.1\.1: ready[\s\S]*vm\.1\.2: ready|vm\.1\.2: ready[\s\S]*vm\.1\.1: ready/);
      p.child.kill("SIGINT");
      const r = await p.done;
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /vm\.1\.1\s+cancelled/);
      assert.match(r.stderr, /vm\.1\.2\s+cancelled/);
      assert.match(r.stderr, /2 targets: 2 cancelled/);
    });

    test("when our reader goes away (vmc run | head), the command is cancelled, not left running", async (t) => {
      if (!need(t)) return;
      const p = run(["vm.1.1", "--", "yes"], { timeoutMs: 40_000 });
      await p.waitForOutput(/^y$/m);
      p.child.stdout!.destroy();
      const r = await p.done;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /vm\.1\.1\s+cancelled/);
    });

    test("concurrent commands each get their own output and status", async (t) => {
      if (!need(t)) return;
      const runs = Array.from({ length: 6 }, (_, i) =>
        run(["--json", AGENTS[i % 3]!.id, "--", "sh", "-c", `for n in 1 2 3; do echo run${i}-$n; done; exit ${i}`]).done,
      );
      const results = await Promise.all(runs);
      results.forEach((r, i) => {
        const j = parseRunJson(r);
        assert.equal(j.targets.length, 1);
        assert.equal(j.targets[0]!.agentId, AGENTS[i % 3]!.id);
        assert.equal(j.targets[0]!.stdout, `run${i}-1\nrun${i}-2\nrun${i}-3\n`);
        assert.equal(j.targets[0]!.exitCode, i);
      });
    });

    test("an unknown literal id is reported unreachable with the reason, not left out", async (t) => {
      if (!need(t)) return;
      const j = parseRunJson(await run(["--json", "--expire", "1", "vm.1.1,vm.9.9", "--", "true"]).done);
      assert.deepEqual(j.targets.map((x) => `${x.agentId}:${x.status}`), ["vm.1.1:succeeded", "vm.9.9:unreachable"]);
      assert.match(j.targets[1]!.reason ?? "", /not known.*expired/);
      const none = await run(["vm.7.*", "--", "true"]).done;
      assert.equal(none.code, 3);
      assert.match(none.stderr, /no agent matches/);
    });

    test("100 MB of output streams through with bounded controller memory", async (t) => {
      if (!need(t)) return;
      const total = 100 * 1000 * 1000;
      const p = run(["vm.2.1", "--", "head", "-c", String(total), "/dev/zero"], { keepStdout: 0, rssPollMs: 50, timeoutMs: 300_000 });
      const r = await p.done;
      assert.equal(r.code, 0, r.stderr.slice(-2000));
      assert.equal(r.stdoutBytes, total, `stderr: ${r.stderr.slice(-2000)}\nagent log: ${agents.find((a) => a.id === "vm.2.1")?.log().slice(-3000)}`);
      t.diagnostic(`vmc run peak RSS while relaying 100 MB: ${(r.peakRssBytes / 1048576).toFixed(1)} MiB`);
      assert.ok(r.peakRssBytes > 0, "RSS was measured");
      assert.ok(r.peakRssBytes < 200 * 1024 * 1024, `vmc run RSS peaked at ${r.peakRssBytes} bytes`);
    });

    test("an agent killed mid-command is reported unreachable with the reason, not waited on forever", async (t) => {
      if (!need(t)) return;
      const victim = startAgentProcess({ id: "vm.kill.1", heartbeatMs: 300 }, broker!.url, home);
      t.after(() => victim.kill());
      await watcher!.waitFor(["vm.kill.1"]);
      const p = run(["vm.kill.1", "--", "sh", "-c", "echo ready; sleep 60"], { timeoutMs: 40_000 });
      await p.waitForOutput(/ready/);
      await victim.kill();
      const r = await p.done;
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /vm\.kill\.1\s+unreachable.*went offline/);
    });

    test("forged, expired and replayed commands are refused end to end", async (t) => {
      if (!need(t)) return;
      const { checkRefusals } = await import("./refusals");
      await checkRefusals(broker!.url, home, "vm.1.1", t);
    });

    test("the broker restarted mid-command: the result arrives, or the target is unreachable with the reason", async (t) => {
      if (!need(t)) return;
      const p = run(["vm.1.2", "--", "sh", "-c", "echo started; sleep 2; echo finished"], { timeoutMs: 90_000 });
      await p.waitForOutput(/started/);
      await broker!.restart();
      const r = await p.done;
      t.diagnostic(`after a ${kind} restart: exit ${r.code}; ${r.stderr.trim().split("\n").slice(-2).join(" | ")}`);
      if (r.code === 0) assert.equal(r.stdout, "started\nfinished\n");
      else assert.match(r.stderr, /vm\.1\.2\s+unreachable\s+-.*\S{10,}/);
    });
  });
}
