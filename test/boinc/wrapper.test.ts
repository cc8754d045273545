/**
 * The BOINC wrapper example (Python, not TypeScript) runs a real job in a real QEMU VM through
 * `vmc rpc --framing ndjson`: the output file must be right, and the JSON-RPC trace it recorded
 * must show the whole life (VM created and started, input put, job run, checkpoints taken,
 * suspend = pause and resume, output got, VM stopped and deleted). A second test kills the wrapper
 * with SIGKILL after a checkpoint and starts it again: it restores the checkpoint and finishes.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { GuestImage } from "@vmc/server/image/index";
import { buildTemplate } from "@vmc/server/hypervisors/qemu/template";
import { testImage } from "../image/fixture";
import { qemuInstalled, removeHome, tempHome } from "../vm/harness";
import { executable, requireComponent } from "../harness/components";
import { startEmbeddedBroker, vmcBundle, type EmbeddedBroker } from "../harness/embedded-broker";
import { Trace, exitWithin, expectedOutput, python, startWrapper } from "./run-wrapper";

const pythonInstalled = executable(python);

describe("BOINC wrapper example on a QEMU VM", { timeout: 600_000 }, () => {
  let home: string;
  let broker: EmbeddedBroker | undefined;
  let image: GuestImage;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    if (!qemuInstalled || !pythonInstalled) return;
    home = tempHome("vmc-boinc-");
    image = await testImage();
    broker = await startEmbeddedBroker();
    env = { ...process.env, VMC_HOME: join(home, "vmc"), VMC_BROKER: broker.url, VMC: vmcBundle };
    // One boot for both jobs: their VMs are clones of this saved guest (vm.create uses a template
    // of the same image and size by default), as a volunteer's host would keep one.
    await buildTemplate(env.VMC_HOME!, image, { memoryMiB: 512, cpus: 1 });
  });

  after(async () => {
    await broker?.stop();
    if (home) removeHome(join(home, "vmc"));
    if (home) removeHome(home);
  });

  const available = (t: import("node:test").TestContext) =>
    requireComponent(t, "qemu", qemuInstalled) && requireComponent(t, "python3 (Debian)", pythonInstalled, "apt-get install python3");

  it("runs a whole job: input in, checkpoints, suspend/resume, output out, VM deleted", async (t) => {
    if (!available(t)) return;
    const slot = join(home, "slot-whole");
    mkdirSync(slot);
    const tracePath = join(slot, "trace.ndjson");
    // The example's input has 16 ranges up to 20 000 (about 10 s of CPU in the guest); 12 up to
    // 12 000 keep the same steps in less time.
    const input = join(slot, "input.txt");
    writeFileSync(input, Array.from({ length: 12 }, (_, i) => `${i * 1000 + 1} ${(i + 1) * 1000}\n`).join(""));
    const run = startWrapper(
      ["--slot", slot, "--image", image.dir, "--vm-name", "boinc-whole", "--input", input, "--checkpoint-interval", "1", "--suspend-at", "0.3", "--suspend-for", "3", "--trace", tracePath],
      env,
    );
    t.after(() => run.kill());
    const status = await exitWithin(run, 300_000);
    t.diagnostic(run.stderr());
    assert.equal(status, 0, `wrapper exit status\n${run.stderr()}`);

    assert.equal(readFileSync(join(slot, "output.txt"), "utf8"), expectedOutput(readFileSync(input, "utf8")), "the job's output");
    const trace = new Trace(tracePath);
    const calls = trace.calls();
    for (const c of calls) assert.equal(c.error, undefined, `${c.method} failed: ${JSON.stringify(c.error)}`);
    const methods = new Set(calls.map((c) => c.method));
    for (const m of ["vmc.handshake", "vm.create", "vm.start", "file.put", "cmd.run", "vm.snapshot.take", "vm.pause", "vm.resume", "file.get", "vm.stop", "vm.delete"]) {
      assert.ok(methods.has(m), `the wrapper called ${m}`);
    }
    assert.equal(calls[0]!.method, "vmc.handshake", "the handshake comes first");
    const order = (m: string) => calls.findIndex((c) => c.method === m);
    assert.ok(order("vm.create") < order("vm.start") && order("vm.start") < order("file.put"), "create, start, then put");
    const start = calls.find((c) => c.method === "vm.start")!;
    assert.equal((start.result as { state: string; agentOnline: boolean }).state, "running");
    assert.equal((start.result as { agentOnline: boolean }).agentOnline, true, "waitForAgent answered once the agent was online");
    assert.equal(calls.filter((c) => c.method === "file.put").length, 2, "input and job script put");

    const job = calls.find((c) => c.method === "cmd.run" && (c.params.argv as string[]).join(" ").includes("job.sh"))!;
    assert.ok(job, "the job command was run");
    const record = job.result as { id: string; state: string };
    assert.equal(record.state, "running", "cmd.run without wait answers at once");
    const finished = trace.notifications("cmd.finished").find((n) => n.params.id === record.id);
    assert.ok(finished, "cmd.finished for the job");
    const target = (finished.params.targets as Array<{ status: string; exitCode: number; resources: { cpuUserMs: number; cpuSystemMs: number } }>)[0]!;
    assert.equal(target.status, "succeeded");
    assert.equal(target.exitCode, 0);
    assert.ok(target.resources.cpuUserMs + target.resources.cpuSystemMs > 500, "the job's own CPU time is reported");

    const progress = trace.progress(record.id);
    assert.equal(progress.length, 13, "a progress line at the start and after each of the 12 ranges, each once");
    assert.equal(progress.at(-1)!.fraction, 1);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.fraction >= progress[i - 1]!.fraction, "fraction done never goes back");

    const checkpoints = calls.filter((c) => c.method === "vm.snapshot.take");
    assert.ok(checkpoints.length >= 1, "at least one checkpoint");
    checkpoints.forEach((c, i) => assert.equal(c.params.snapshot, `boinc-ckpt-${i + 1}`));
    assert.deepEqual(
      calls.filter((c) => c.method === "vm.snapshot.delete").map((c) => c.params.snapshot),
      checkpoints.slice(0, -1).map((c) => c.params.snapshot),
      "each checkpoint replaces the previous one",
    );
    for (const c of checkpoints) assert.ok(c.at > job.answeredAt && c.at < finished.at, "checkpoints taken while the job ran");

    const pause = calls.find((c) => c.method === "vm.pause")!;
    const resume = calls.find((c) => c.method === "vm.resume")!;
    assert.equal((pause.result as { state: string }).state, "paused");
    assert.equal((resume.result as { state: string }).state, "running");
    assert.ok(resume.at - pause.answeredAt >= 2900, "suspended for the simulated 3 s");
    assert.ok(pause.at > job.answeredAt && resume.answeredAt < finished.at, "suspend and resume happened mid-job");
    assert.ok(progress.some((p) => p.at > resume.answeredAt && p.fraction < 1), "the job went on after the resume");
    const states = trace.notifications("vm.stateChanged").filter((n) => n.params.name === "boinc-whole").map((n) => n.params.state);
    assert.ok(states.includes("paused"), "vm.stateChanged reported the pause");

    const tail = calls.slice(-3).map((c) => c.method);
    assert.deepEqual(tail, ["file.get", "vm.stop", "vm.delete"], "output got, then the VM stopped and deleted");
    assert.equal((calls.at(-2)!.result as { state: string }).state, "stopped");
    assert.equal(existsSync(join(env.VMC_HOME!, "vms", "boinc-whole")), false, "the VM is gone from $VMC_HOME");

    const report = JSON.parse(readFileSync(join(slot, "boinc_finish.json"), "utf8")) as { fraction_done: number; cpu_time: number; checkpoints: number };
    assert.equal(report.fraction_done, 1);
    assert.equal(report.checkpoints, checkpoints.length);
    assert.equal(report.cpu_time, Number(((target.resources.cpuUserMs + target.resources.cpuSystemMs) / 1000).toFixed(3)), "CPU time = the job command's");
    assert.equal(existsSync(join(slot, "vmc_wrapper_state.json")), false, "no restart state left");
  });

  it("killed mid-job and started again, restores its last checkpoint and finishes", async (t) => {
    if (!available(t)) return;
    const slot = join(home, "slot-restart");
    mkdirSync(slot);
    const input = join(slot, "input.txt");
    // Work enough (~8 s of guest CPU) that the restored copy of the first run, which goes on from the
    // checkpoint at once, cannot finish before the second run takes over (its agent is back ~1-2 s
    // after the restore): finishing, it would remove its partial output and leave nothing to continue.
    const ranges = Array.from({ length: 10 }, (_, i) => `${i * 3000 + 1} ${(i + 1) * 3000}`);
    writeFileSync(input, `${ranges.join("\n")}\n`);
    const common = ["--slot", slot, "--image", image.dir, "--vm-name", "boinc-restart", "--input", input];

    const first = startWrapper([...common, "--checkpoint-interval", "1", "--trace", join(slot, "trace-1.ndjson")], env);
    t.after(() => first.kill());
    // A checkpoint taken once some ranges are done, so a restart from scratch would show.
    await first.line(/checkpoint boinc-ckpt-\d+ completed .*fraction done 0\.(?!0000)\d+/, 240_000);
    await first.kill();
    const state = JSON.parse(readFileSync(join(slot, "vmc_wrapper_state.json"), "utf8")) as { checkpoint: string; fraction: number; cpu: number };
    assert.match(state.checkpoint, /^boinc-ckpt-\d+$/);

    const second = startWrapper([...common, "--checkpoint-interval", "30", "--trace", join(slot, "trace-2.ndjson")], env);
    t.after(() => second.kill());
    const status = await exitWithin(second, 240_000);
    t.diagnostic(first.stderr() + second.stderr());
    assert.equal(status, 0, `restarted wrapper exit status\n${second.stderr()}`);
    assert.equal(readFileSync(join(slot, "output.txt"), "utf8"), expectedOutput(readFileSync(input, "utf8")), "the job's output");

    const trace = new Trace(join(slot, "trace-2.ndjson"));
    const calls = trace.calls();
    for (const c of calls) assert.equal(c.error, undefined, `${c.method} failed: ${JSON.stringify(c.error)}`);
    assert.equal(calls.some((c) => c.method === "vm.create"), false, "no new VM");
    const restore = calls.find((c) => c.method === "vm.snapshot.restore")!;
    assert.ok(restore, "the checkpoint was restored");
    assert.equal(restore.params.snapshot, state.checkpoint);
    assert.equal((restore.result as { state: string }).state, "running");
    const job = calls.find((c) => c.method === "cmd.run" && (c.params.argv as string[]).join(" ").includes("job.sh"))!;
    // Whole milliseconds: the wrapper sends the job in the same millisecond the restore answered.
    assert.ok(job.at >= restore.answeredAt, "the job runs again after the restore");
    const progress = trace.progress((job.result as { id: string }).id);
    assert.ok(progress[0]!.fraction > 0, `the job continued from the checkpoint's partial output, not from zero (${progress[0]!.fraction})`);
    assert.ok(progress[0]!.fraction >= state.fraction, "no less done than when the checkpoint was taken");
    assert.deepEqual(calls.slice(-3).map((c) => c.method), ["file.get", "vm.stop", "vm.delete"]);
    assert.equal(existsSync(join(env.VMC_HOME!, "vms", "boinc-restart")), false, "the VM is gone from $VMC_HOME");
    const report = JSON.parse(readFileSync(join(slot, "boinc_finish.json"), "utf8")) as { cpu_time: number };
    assert.ok(report.cpu_time > state.cpu, "CPU time counts the work before the checkpoint too");
  });
});
