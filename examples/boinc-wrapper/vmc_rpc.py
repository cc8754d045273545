"""A small JSON-RPC 2.0 client for `vmc rpc --framing ndjson` (one JSON object per line on stdio).

Standard library only. One thread: `call()` writes a request and reads the controller's output
until the answer with its id arrives; notifications that arrive meanwhile (cmd.output,
cmd.finished, vm.stateChanged...) go to the handlers registered with `on()`. `wait()` reads
notifications until a deadline or until a file descriptor given to it (a signal's wake-up pipe)
becomes readable, so the wrapper reacts to events as they happen instead of polling.

Every message in either direction can be recorded in a trace file (one JSON object per line:
`{"t": ms since start, "dir": ">" (to vmc) or "<" (from vmc), "msg": {...}}`).
"""

import json
import os
import select
import subprocess
import time

MAX_LINE_BYTES = 64 * 1024 * 1024


class RpcError(Exception):
    """The controller answered a request with a JSON-RPC error."""

    def __init__(self, method, error):
        self.method = method
        self.code = error.get("code")
        self.data = error.get("data")
        super().__init__("%s failed: %s (code %s%s)" % (
            method, error.get("message", "?"), self.code,
            ", data %s" % json.dumps(self.data) if self.data is not None else ""))


class RpcClosed(Exception):
    """`vmc rpc` exited or closed its output."""


class VmcRpc:
    def __init__(self, command, trace_path=None, env=None, log=None):
        self._log = log or (lambda message: None)
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self._out = self._proc.stdout.fileno()
        self._buffer = b""
        self._next_id = 1
        self._answers = {}
        self._handlers = {}
        self._started = time.monotonic()
        self._trace = open(trace_path, "a", encoding="utf-8") if trace_path else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def on(self, method, handler):
        """Calls `handler(params)` for each notification `method` (one handler per method)."""
        self._handlers[method] = handler

    def call(self, method, params=None, timeout=None):
        """Sends a request and returns its result; raises RpcError on an error answer."""
        request_id = self._next_id
        self._next_id += 1
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        while request_id not in self._answers:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("%s: no answer within %s s" % (method, timeout))
            self._read(left)
        answer = self._answers.pop(request_id)
        if "error" in answer:
            raise RpcError(method, answer["error"])
        return answer.get("result")

    def wait(self, timeout, wake_fd=None):
        """Waits up to `timeout` seconds for something to happen and dispatches what arrived.
        Returns "wake" when `wake_fd` became readable, "message" when messages were read (and
        dispatched), "timeout" otherwise."""
        return self._read(max(0.0, timeout), wake_fd)

    def close(self, timeout=10):
        """Closes stdin (the controller then exits) and waits for the process."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._trace:
            self._trace.close()
            self._trace = None

    def _send(self, message):
        self._record(">", message)
        try:
            self._proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (BrokenPipeError, OSError) as err:
            raise RpcClosed("vmc rpc is gone (%s; exit status %s)" % (err, self._proc.poll()))

    def _read(self, timeout, wake_fd=None):
        fds = [self._out] + ([wake_fd] if wake_fd is not None else [])
        readable, _, _ = select.select(fds, [], [], timeout)
        if wake_fd is not None and wake_fd in readable:
            return "wake"
        if self._out not in readable:
            return "timeout"
        chunk = os.read(self._out, 1 << 20)
        if not chunk:
            raise RpcClosed("vmc rpc closed its output (exit status %s)" % self._proc.wait())
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                self._dispatch(line)
        if len(self._buffer) > MAX_LINE_BYTES:
            raise RpcClosed("vmc rpc sent a line longer than %d bytes" % MAX_LINE_BYTES)
        return "message"

    def _dispatch(self, line):
        try:
            message = json.loads(line)
        except ValueError:
            self._log("ignoring a line from vmc rpc that is not JSON: %r" % line[:200])
            return
        self._record("<", message)
        if not isinstance(message, dict):
            return
        if "method" in message and "id" in message:
            # A request from the controller: this client offers none.
            self._send({"jsonrpc": "2.0", "id": message["id"],
                        "error": {"code": -32601, "message": "the BOINC wrapper handles no requests"}})
        elif "method" in message:
            handler = self._handlers.get(message["method"])
            if handler:
                handler(message.get("params"))
        elif "id" in message:
            self._answers[message["id"]] = message

    def _record(self, direction, message):
        if self._trace:
            elapsed = int((time.monotonic() - self._started) * 1000)
            self._trace.write(json.dumps({"t": elapsed, "dir": direction, "msg": message}) + "\n")
            self._trace.flush()
