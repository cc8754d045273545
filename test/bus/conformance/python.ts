// A second client nobody here wrote: Debian's python3-stomp (stomp.py), driven as a subprocess
// through test/bus/py/stomp_client.py (all scenarios in one interpreter: starting Python is the
// slow part), for the subset VM Controller's peers would use.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { requireComponent } from "../../harness/components";
import { testIf, type BrokerFixture } from "../fixture";

const python = "/usr/bin/python3";
const script = fileURLToPath(new URL("../py/stomp_client.py", import.meta.url));

let stompPy: boolean | undefined;
function pythonStompInstalled(): boolean {
  stompPy ??= spawnSync(python, ["-c", "import stomp"], { stdio: "ignore", timeout: 10_000 }).status === 0;
  return stompPy;
}

type Result = Record<string, unknown>;

/** Runs every scenario of `plan` (scenario → destination) in one python3 process. */
function runAll(fx: BrokerFixture, plan: Record<string, string>, kill: (f: () => void) => void): Promise<Record<string, Result>> {
  const b = fx.broker();
  const args = [script, b.host, String(b.port), ...Object.entries(plan).map(([name, dest]) => `${name}=${dest}`)];
  return new Promise((resolve, reject) => {
    const child = execFile(python, args, { timeout: 120_000 }, (err, stdout, stderr) => {
      if (err && !stdout) return reject(new Error(`python3-stomp: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as Record<string, Result>);
      } catch (e) {
        reject(new Error(`python3-stomp: unparseable output ${stdout}\n${stderr} (${String(e)})`));
      }
    });
    kill(() => child.kill("SIGKILL"));
  });
}

export function pythonConformance(fx: BrokerFixture): void {
  describe("python3-stomp client", () => {
    const present = (t: Parameters<BrokerFixture["present"]>[0]): boolean =>
      fx.present(t) && requireComponent(t, "python3-stomp", pythonStompInstalled(), "apt-get install python3-stomp");
    const plan: Record<string, string> = {
      connect: fx.dest("/queue/", "py-connect"),
      sendrecv: fx.dest("/queue/", "py-sendrecv"),
      binary: fx.dest("/queue/", "py-binary"),
      transaction: fx.dest("/queue/", "py-tx"),
    };
    if (fx.quirks.nackRequeues) plan.acknack = fx.dest("/queue/", "py-acknack");
    let batch: Promise<Record<string, Result>> | undefined;
    let stopPython: (() => void) | undefined;
    after(() => stopPython?.());
    /** This scenario's result; the first call starts the one python3 process for all of them. */
    const run = async (scenario: string): Promise<Result> => {
      batch ??= runAll(fx, plan, (f) => (stopPython = f));
      const r = (await batch)[scenario];
      if (!r) throw new Error(`python3-stomp: no result for ${scenario}`);
      if (r.error) throw new Error(`python3-stomp ${scenario}: ${String(r.error)}`);
      return r;
    };

    test("connects with STOMP 1.2; a wrong passcode is refused", async (t) => {
      if (!present(t)) return;
      const r = await run("connect");
      assert.equal(r.connected, true);
      assert.equal(r.version, "1.2");
      assert.equal(r.wrongPasscodeConnected, false);
    });

    test("send and receive a JSON message with custom headers", async (t) => {
      if (!present(t)) return;
      const r = await run("sendrecv");
      assert.deepEqual(r, { body: '{"type":"HELLO"}', contentType: "application/json", xFrom: "python", destination: plan.sendrecv });
    });

    testIf(fx.quirks.nackRequeues)("NACK redelivers with redelivered:true, ACK settles", async (t) => {
      if (!present(t)) return;
      const r = await run("acknack");
      assert.equal(r.first, "work");
      assert.equal(r.again, "work");
      assert.equal(r.afterAck, "marker", "the ACKed message came back");
      if (fx.quirks.redeliveredHeader) {
        assert.equal(r.firstRedelivered, "false");
        assert.equal(r.againRedelivered, "true");
      }
    });

    test("a 70 kB binary body with NUL bytes arrives intact", async (t) => {
      if (!present(t)) return;
      const r = await run("binary");
      assert.equal(r.gotSha, r.sentSha);
      assert.equal(r.length, 70005);
    });

    test("transactions: COMMIT delivers, ABORT discards", async (t) => {
      if (!present(t)) return;
      const r = await run("transaction");
      assert.deepEqual(r, { beforeCommit: "outside", committed: ["tx-1", "tx-2"], afterAbort: "marker" });
    });
  });
}
