#!/usr/bin/python3
"""A BOINC-style VM wrapper over VM Controller's JSON-RPC API (`vmc rpc --framing ndjson`).

It does what BOINC's vboxwrapper does for a job, through one API instead of VBoxManage:
create a VM from the base image, start it, put the input in, run the job command, report fraction
done and CPU time as the job streams them, checkpoint (VM snapshot) every --checkpoint-interval
seconds of running time, pause on suspend and resume, get the output out, stop and delete the VM.
A restarted wrapper (after a quit, a crash or a kill) restores the VM to its last checkpoint and
finishes the job from there.

BOINC's process-control messages are stood in for by signals (the real wrapper reads them from
the client's shared memory): SIGUSR1 suspend, SIGUSR2 resume, SIGTERM quit (checkpoint, then a
temporary exit), SIGINT abort. --suspend-at/--suspend-for simulate a suspend mid-job.

Exit status as a BOINC app's: 0 when the job finished (output written) or after a temporary exit
(the file `boinc_temporary_exit` in the slot says so); 194 (EXIT_ABORTED_BY_CLIENT) after an
abort; the job's exit code when it failed; 1 with a message on stderr for any other error.
"""

import argparse
import base64
import hashlib
import json
import os
import shlex
import signal
import sys
import time

from vmc_rpc import RpcClosed, RpcError, VmcRpc

EXIT_ABORTED_BY_CLIENT = 194
GUEST_DIR = "/var/lib/vmc/home/boinc"
STATE_FILE = "vmc_wrapper_state.json"
HERE = os.path.dirname(os.path.abspath(__file__))


def log(message):
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write("%s (%d): boinc-wrapper: %s\n" % (stamp, os.getpid(), message))
    sys.stderr.flush()


class JobFailed(Exception):
    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def write_json_atomically(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ControlSignals:
    """Signals → pending BOINC control requests, with a wake-up pipe so waiting ends at once."""

    NAMES = {signal.SIGUSR1: "suspend", signal.SIGUSR2: "resume", signal.SIGTERM: "quit", signal.SIGINT: "abort"}

    def __init__(self):
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        self.pending = []
        for signum in self.NAMES:
            signal.signal(signum, self._handle)

    def _handle(self, signum, _frame):
        self.pending.append(self.NAMES[signum])

    def take(self):
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass
        requests, self.pending = self.pending, []
        return requests


class Wrapper:
    def __init__(self, args, rpc, control):
        self.args = args
        self.rpc = rpc
        self.control = control
        self.slot = args.slot
        self.state_path = os.path.join(self.slot, STATE_FILE)
        self.vm = args.vm_name
        self.state = self._load_state()
        self._reset_progress()
        self.cmd_id = None
        self.finished = None
        self.early = {}
        self.stdout_consumed = 0
        self.stdout_partial = b""
        self.stderr_tail = b""
        self.suspended = False
        self.resume_at = None
        self.simulated_suspend_done = False
        self.vm_state = None
        rpc.on("cmd.output", self._on_output)
        rpc.on("cmd.finished", self._on_finished)
        rpc.on("vm.stateChanged", self._on_vm_state)

    def _reset_progress(self):
        """Progress as of the last checkpoint (all zero for a new job)."""
        self.fraction = self.state.get("fraction", 0.0)
        self.cpu_base = self.state.get("cpu", 0.0)
        self.cpu_run = 0.0
        self.elapsed = self.state.get("elapsed", 0.0)
        self.checkpoints = self.state.get("checkpoints", 0)
        self.last_checkpoint_elapsed = self.elapsed

    # ───────────── the job's life ─────────────

    def run(self):
        hello = self.rpc.call("vmc.handshake", {"client": "boinc-wrapper-example/1"}, timeout=60)
        log("controller %s (protocol %s), broker %s, drivers %s" % (
            hello["serverVersion"], hello["protocolVersion"], hello["broker"],
            ", ".join(d["name"] for d in hello["drivers"] if d["available"])))
        driver = next((d for d in hello["drivers"] if d["name"] == self.args.driver), None)
        if not driver or not driver["available"]:
            raise JobFailed("the %s driver is not available on this host" % self.args.driver)
        if not (driver["features"]["pause"] and driver["features"]["snapshotsWithMemory"]):
            raise JobFailed("the %s driver cannot pause or take memory snapshots" % self.args.driver)

        if self.state.get("checkpoint") and self._vm_exists():
            self._restart_from_checkpoint()
        else:
            if self.state:
                log("no usable checkpoint of VM %s: starting the job over" % self.vm)
                self._delete_vm_if_any()
                os.unlink(self.state_path)
                self.state = {}
                self._reset_progress()
            self._fresh_start()
        self._start_job()
        outcome = self._follow_job()
        if outcome == "quit":
            return self._temporary_exit()
        if outcome == "abort":
            return self._abort()
        return self._finish()

    def _fresh_start(self):
        params = {"name": self.vm, "driver": self.args.driver}
        if self.args.image:
            params["image"] = self.args.image
        if self.args.memory:
            params["memoryMiB"] = self.args.memory
        log("creating VM %s" % self.vm)
        self.rpc.call("vm.create", params, timeout=600)
        self._save_state()
        info = self.rpc.call("vm.start", {"name": self.vm, "waitForAgent": True, "agentTimeoutMs": 240_000}, timeout=300)
        log("VM %s %s (%s), agent online: %s" % (self.vm, info["state"], info.get("accel", "?"), info["agentOnline"]))
        self._sh("mkdir -p %s" % GUEST_DIR)
        for host_path, name in ((self.args.input, "input.txt"), (self.args.job_script, "job.sh")):
            result = self.rpc.call("file.put", {
                "sources": [host_path], "destination": {"target": self.vm, "path": "%s/%s" % (GUEST_DIR, name)}}, timeout=300)
            log("put %s → %s:%s/%s (%d bytes, %s)" % (host_path, self.vm, GUEST_DIR, name, result["bytes"], result["channel"]))

    def _restart_from_checkpoint(self):
        snapshot = self.state["checkpoint"]
        log("restarting: restoring VM %s to checkpoint %s (fraction done %.4f, CPU %.1f s)" % (
            self.vm, snapshot, self.fraction, self.cpu_base))
        info = self.rpc.call("vm.snapshot.restore", {"name": self.vm, "snapshot": snapshot}, timeout=300)
        log("VM %s %s after the restore" % (self.vm, info["state"]))

    def _start_job(self):
        record = self.rpc.call("cmd.run", {
            "target": self.vm,
            # Below the agent's priority, as BOINC runs apps: progress keeps flowing from a busy guest.
            "argv": ["sh", "-c", "renice -n 10 -p $$ >/dev/null && exec sh job.sh input.txt output.txt"],
            "cwd": GUEST_DIR,
            "timeoutMs": self.args.job_timeout * 1000,
            "expiresInMs": 120_000,
            "stream": True,
            "wait": False,
        }, timeout=180)
        self.cmd_id = record["id"]
        log("job command %s started" % self.cmd_id)
        for method, params in self.early.pop(self.cmd_id, []):
            (self._on_output if method == "cmd.output" else self._on_finished)(params)
        self.early.clear()

    def _follow_job(self):
        """Reacts to the job's events, BOINC's requests and the checkpoint clock until the job ends."""
        clock = last_event = time.monotonic()
        while self.finished is None:
            now = time.monotonic()
            if not self.suspended:
                self.elapsed += now - clock
            clock = now
            for request in self.control.take():
                if request == "suspend":
                    self._suspend()
                elif request == "resume":
                    self._resume()
                elif request in ("quit", "abort"):
                    return request
            if self.args.quit_at is not None and self.fraction >= self.args.quit_at:
                log("simulated BOINC quit at fraction done %.4f" % self.fraction)
                return "quit"
            if (self.args.suspend_at is not None and not self.simulated_suspend_done
                    and self.fraction >= self.args.suspend_at):
                self.simulated_suspend_done = True
                log("simulated BOINC suspend for %.1f s" % self.args.suspend_for)
                self._suspend()
                self.resume_at = time.monotonic() + self.args.suspend_for
            if self.resume_at is not None and time.monotonic() >= self.resume_at:
                self.resume_at = None
                self._resume()
            if not self.suspended and self.elapsed - self.last_checkpoint_elapsed >= self.args.checkpoint_interval:
                self._checkpoint()
                # The interval runs from the end of a checkpoint: slow snapshots never come back to back.
                now = time.monotonic()
                self.elapsed += now - clock
                clock = now
                self.last_checkpoint_elapsed = self.elapsed
            self._write_status()
            if self.vm_state == "stopped":
                raise JobFailed("VM %s stopped under the job (%s)" % (self.vm, self.vm_state))
            timeout = max(0.05, last_event + self.args.watchdog - time.monotonic())
            if not self.suspended:
                timeout = min(timeout, max(0.05, self.last_checkpoint_elapsed + self.args.checkpoint_interval - self.elapsed))
            if self.resume_at is not None:
                timeout = min(timeout, max(0.05, self.resume_at - time.monotonic()))
            happened = self.rpc.wait(timeout, self.control.read_fd)
            if happened == "message":
                last_event = time.monotonic()
            elif happened == "timeout" and time.monotonic() - last_event >= self.args.watchdog:
                self._watchdog()
                last_event = time.monotonic()
        return "finished"

    def _watchdog(self):
        # Nothing arrived for --watchdog seconds: ask for the record (a lost notification would
        # otherwise leave the wrapper waiting; results are kept by the controller, not popped).
        record = self.rpc.call("cmd.get", {"id": self.cmd_id}, timeout=60)
        if record["state"] == "finished":
            self._on_finished(record)

    def _finish(self):
        target = self.finished["targets"][0] if self.finished["targets"] else None
        if not target or target["status"] != "succeeded":
            if not target:
                raise JobFailed("job command %s ended with no target" % self.cmd_id)
            stderr = self.stderr_tail.decode("utf-8", "replace").strip()
            ending = "signal %s" % target["signal"] if target["signal"] else "exit code %s" % target["exitCode"]
            raise JobFailed("job command %s: %s, %s%s%s" % (
                self.cmd_id, target["status"], ending if target["exitCode"] is not None or target["signal"] else "never ran",
                " (%s)" % target["reason"] if target.get("reason") else "",
                "; stderr: %s" % stderr[-2000:] if stderr else ""), target["exitCode"] or 1)
        resources = target["resources"] or {}
        cpu = self.cpu_base + (resources.get("cpuUserMs", 0) + resources.get("cpuSystemMs", 0)) / 1000.0
        self.fraction = 1.0
        output = os.path.join(self.slot, self.args.output)
        result = self.rpc.call("file.get", {
            "sources": [{"target": self.vm, "path": GUEST_DIR + "/output.txt"}], "destination": output}, timeout=300)
        log("got %s (%d bytes, %s)" % (output, result["bytes"], result["channel"]))
        self.rpc.call("vm.stop", {"name": self.vm, "timeoutMs": 15_000}, timeout=120)
        self.rpc.call("vm.delete", {"name": self.vm}, timeout=120)
        log("VM %s stopped and deleted" % self.vm)
        report = {"status": "finished", "fraction_done": 1.0, "cpu_time": round(cpu, 3),
                  "elapsed_time": round(self.elapsed, 3), "checkpoints": self.checkpoints,
                  "job_resources": resources, "command": self.cmd_id}
        write_json_atomically(os.path.join(self.slot, "boinc_finish.json"), report)
        os.unlink(self.state_path)
        log("finished: CPU time %.2f s, elapsed %.1f s, %d checkpoints" % (cpu, self.elapsed, self.checkpoints))
        return 0

    def _temporary_exit(self):
        self._checkpoint()
        self.rpc.call("vm.stop", {"name": self.vm, "force": True}, timeout=120)
        with open(os.path.join(self.slot, "boinc_temporary_exit"), "w", encoding="utf-8") as f:
            f.write("%d\nquit: checkpoint %s taken, VM stopped\n" % (self.args.retry_after, self.state["checkpoint"]))
        log("temporary exit after checkpoint %s" % self.state["checkpoint"])
        return 0

    def _abort(self):
        log("abort: cancelling the job and deleting VM %s" % self.vm)
        try:
            self.rpc.call("cmd.cancel", {"id": self.cmd_id}, timeout=60)
        except RpcError as err:
            log("cancel: %s" % err)
        self.rpc.call("vm.delete", {"name": self.vm, "force": True}, timeout=120)
        os.unlink(self.state_path)
        return EXIT_ABORTED_BY_CLIENT

    # ───────────── BOINC requests ─────────────

    def _suspend(self):
        if self.suspended:
            return
        info = self.rpc.call("vm.pause", {"name": self.vm}, timeout=60)
        self.suspended = True
        log("suspended: VM %s %s" % (self.vm, info["state"]))

    def _resume(self):
        if not self.suspended:
            return
        info = self.rpc.call("vm.resume", {"name": self.vm}, timeout=60)
        self.suspended = False
        log("resumed: VM %s %s" % (self.vm, info["state"]))

    def _checkpoint(self):
        name = "boinc-ckpt-%d" % (self.checkpoints + 1)
        previous = self.state.get("checkpoint")
        started = time.monotonic()
        # Progress reported before the request is surely in the snapshot; lines that arrive while
        # it is taken may have been written after it.
        fraction, cpu = self.fraction, self.cpu_base + self.cpu_run
        self.rpc.call("vm.snapshot.take", {"name": self.vm, "snapshot": name}, timeout=300)
        self.checkpoints += 1
        self.last_checkpoint_elapsed = self.elapsed
        self._save_state(checkpoint=name, fraction=fraction, cpu=cpu)
        if previous:
            self.rpc.call("vm.snapshot.delete", {"name": self.vm, "snapshot": previous}, timeout=120)
        log("checkpoint %s completed in %.2f s (fraction done %.4f, CPU %.1f s)" % (
            name, time.monotonic() - started, fraction, cpu))

    # ───────────── notifications ─────────────

    def _on_output(self, event):
        if self.cmd_id is None:
            self._keep_early("cmd.output", event)
            return
        if event.get("id") != self.cmd_id:
            return
        data = base64.b64decode(event["data"])
        if event["stream"] == "stderr":
            self.stderr_tail = (self.stderr_tail + data)[-4096:]
            return
        # Output is delivered at least once: skip bytes already seen, by offset.
        skip = self.stdout_consumed - event["offset"]
        if skip >= len(data) or event["offset"] > self.stdout_consumed:
            return
        data = data[max(0, skip):]
        self.stdout_consumed += len(data)
        self.stdout_partial += data
        *lines, self.stdout_partial = self.stdout_partial.split(b"\n")
        self.stdout_partial = self.stdout_partial[-4096:]
        for line in lines:
            words = line.decode("utf-8", "replace").split()
            if len(words) == 3 and words[0] == "progress":
                try:
                    self.fraction = min(1.0, max(0.0, float(words[1])))
                    self.cpu_run = float(words[2])
                except ValueError:
                    continue

    def _on_finished(self, record):
        if self.cmd_id is None:
            self._keep_early("cmd.finished", record)
        elif record.get("id") == self.cmd_id and record.get("state") == "finished":
            self.finished = record

    def _keep_early(self, method, params):
        # Notifications that race ahead of cmd.run's answer; bounded, replayed once the id is known.
        if sum(len(v) for v in self.early.values()) < 10_000:
            self.early.setdefault(params.get("id"), []).append((method, params))

    def _on_vm_state(self, change):
        if change.get("name") == self.vm:
            self.vm_state = change.get("state")

    def clean_up_after_error(self):
        """An unrecoverable error: like vboxwrapper's cleanup(), the VM goes (best effort)."""
        if not self.state:
            return
        try:
            if self._vm_exists():
                self.rpc.call("vm.delete", {"name": self.vm, "force": True}, timeout=120)
                log("VM %s deleted" % self.vm)
            os.unlink(self.state_path)
        except (RpcError, RpcClosed, TimeoutError, OSError) as err:
            log("could not clean up VM %s: %s" % (self.vm, err))

    # ───────────── helpers ─────────────

    def _sh(self, script):
        record = self.rpc.call("cmd.run", {"target": self.vm, "argv": [script], "shell": True, "wait": True,
                                            "stream": False, "timeoutMs": 60_000, "expiresInMs": 60_000}, timeout=120)
        target = record["targets"][0]
        if target["status"] != "succeeded":
            raise JobFailed("'%s' in VM %s: %s %s" % (script, self.vm, target["status"], target.get("reason") or ""))

    def _vm_exists(self):
        return any(vm["name"] == self.vm for vm in self.rpc.call("vm.list", {}, timeout=60))

    def _delete_vm_if_any(self):
        if self._vm_exists():
            self.rpc.call("vm.delete", {"name": self.vm, "force": True}, timeout=120)

    def _load_state(self):
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) and state.get("vm") == self.vm else {}
        except FileNotFoundError:
            return {}

    def _save_state(self, **changes):
        self.state.update({"vm": self.vm, "fraction": self.fraction, "cpu": self.cpu_base + self.cpu_run,
                           "elapsed": self.elapsed, "checkpoints": self.checkpoints})
        self.state.update(changes)
        write_json_atomically(self.state_path, self.state)

    def _write_status(self):
        # The equivalent of boinc_report_app_status(cpu, checkpoint cpu, fraction done).
        status = {"fraction_done": self.fraction, "cpu_time": round(self.cpu_base + self.cpu_run, 3),
                  "checkpoint_cpu_time": self.state.get("cpu", 0.0), "elapsed_time": round(self.elapsed, 3),
                  "suspended": self.suspended}
        if status != getattr(self, "_last_status", None):
            self._last_status = status
            write_json_atomically(os.path.join(self.slot, "boinc_status.json"), status)


def vmc_command(args):
    vmc = args.vmc or os.environ.get("VMC") or "vmc"
    words = shlex.split(vmc)
    if words[-1].endswith((".mjs", ".js")) and len(words) == 1:
        words = ["node"] + words
    return words + ["rpc", "--framing", "ndjson"]


def parse_args(argv):
    p = argparse.ArgumentParser(description="Run one BOINC-style job in a VM through `vmc rpc`.")
    p.add_argument("--vmc", help="the vmc command (default: $VMC, else `vmc` on PATH); a .mjs path runs with node")
    p.add_argument("--slot", default=".", help="BOINC slot directory: state, status and output live here (default .)")
    p.add_argument("--input", default=os.path.join(HERE, "input.txt"), help="the job's input file")
    p.add_argument("--output", default="output.txt", help="output file name in the slot (default output.txt)")
    p.add_argument("--job-script", default=os.path.join(HERE, "job", "primes.sh"), help="the job run in the VM")
    p.add_argument("--vm-name", help="VM name (default: boinc-<hash of the slot path>)")
    p.add_argument("--driver", default="qemu", help="hypervisor driver (default qemu)")
    p.add_argument("--image", help="guest image directory (default: the controller's cached image)")
    p.add_argument("--memory", type=int, help="VM memory in MiB")
    p.add_argument("--checkpoint-interval", type=float, default=600.0,
                   help="seconds of running time between checkpoints (BOINC's default: 600)")
    p.add_argument("--job-timeout", type=int, default=3600, help="seconds the job may run (VM running time)")
    p.add_argument("--suspend-at", type=float, help="simulate a BOINC suspend when fraction done reaches this")
    p.add_argument("--suspend-for", type=float, default=3.0, help="seconds the simulated suspend lasts")
    p.add_argument("--quit-at", type=float, help="simulate a BOINC quit when fraction done reaches this")
    p.add_argument("--retry-after", type=int, default=60, help="seconds a temporary exit asks BOINC to wait")
    p.add_argument("--watchdog", type=float, default=60.0, help="seconds without any event before asking cmd.get")
    p.add_argument("--trace", help="append every JSON-RPC message to this file (one JSON object per line)")
    args = p.parse_args(argv)
    args.slot = os.path.abspath(args.slot)
    args.input = os.path.abspath(args.input)
    args.job_script = os.path.abspath(args.job_script)
    if not args.vm_name:
        args.vm_name = "boinc-" + hashlib.sha256(args.slot.encode()).hexdigest()[:10]
    for path in (args.input, args.job_script):
        if not os.path.isfile(path):
            p.error("%s is not a file" % path)
    if not os.path.isdir(args.slot):
        p.error("slot directory %s does not exist" % args.slot)
    return args


def main(argv):
    args = parse_args(argv)
    control = ControlSignals()
    command = vmc_command(args)
    log("starting %s" % " ".join(shlex.quote(w) for w in command))
    try:
        with VmcRpc(command, trace_path=args.trace, log=log) as rpc:
            wrapper = Wrapper(args, rpc, control)
            try:
                return wrapper.run()
            except (JobFailed, RpcError) as err:
                log("ERROR: %s" % err)
                wrapper.clean_up_after_error()
                return err.exit_code if isinstance(err, JobFailed) else 1
    except (RpcClosed, TimeoutError, OSError) as err:
        # The controller is gone or stuck: the VM and the state file stay for a restart.
        log("ERROR: %s" % err)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
