// A second client nobody here wrote: Debian's python3-stomp (stomp.py), driven as a subprocess
// through test/bus/py/stomp_client.py, for the subset VM Controller's peers would use.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { requireComponent } from "../../harness/components";
import type { BrokerFixture } from "../fixture";

const python = "/usr/bin/python3";
const script = fileURLToPath(new URL("../py/stomp_client.py", import.meta.url));

let stompPy: boolean | undefined;
function pythonStompInstalled(): boolean {
  stompPy ??= spawnSync(python, ["-c", "import stomp"], { stdio: "ignore", timeout: 10_000 }).status === 0;
  return stompPy;
}

type Result = Record<string, unknown>;

function run(fx: BrokerFixture, scenario: string, dest: string): Promise<Result> {
  const b = fx.broker();
  return new Promise((resolve, reject) => {
    const child = execFile(python, [script, b.host, String(b.port), scenario, dest], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && !stdout) return reject(new Error(`${scenario}: ${err.message}\n${stderr}`));
      try {
        const out = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as Result;
        if (out.error) return reject(new Error(`python3-stomp ${scenario}: ${String(out.error)}\n${stderr}`));
        resolve(out);
      } catch (e) {
        reject(new Error(`${scenario}: unparseable output ${stdout}\n${stderr} (${String(e)})`));
      }
    });
    fx.defer(() => child.kill("SIGKILL"));
  });
}

export function pythonConformance(fx: BrokerFixture): void {
  describe("python3-stomp client", () => {
    const present = (t: Parameters<BrokerFixture["present"]>[0]): boolean =>
      fx.present(t) && requireComponent(t, "python3-stomp", pythonStompInstalled(), "apt-get install python3-stomp");

    test("connects with STOMP 1.2; a wrong passcode is refused", async (t) => {
      if (!present(t)) return;
      const r = await run(fx, "connect", fx.dest("/queue/", "py-connect"));
      assert.equal(r.connected, true);
      assert.equal(r.version, "1.2");
      assert.equal(r.wrongPasscodeConnected, false);
    });

    test("send and receive a JSON message with custom headers", async (t) => {
      if (!present(t)) return;
      const q = fx.dest("/queue/", "py-sendrecv");
      const r = await run(fx, "sendrecv", q);
      assert.deepEqual(r, { body: '{"type":"HELLO"}', contentType: "application/json", xFrom: "python", destination: q });
    });

    test("NACK redelivers with redelivered:true, ACK settles", async (t) => {
      if (!present(t)) return;
      if (!fx.quirks.nackRequeues) return t.skip(`${fx.target.name} dead-letters NACKed messages (documented)`);
      const r = await run(fx, "acknack", fx.dest("/queue/", "py-acknack"));
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
      const r = await run(fx, "binary", fx.dest("/queue/", "py-binary"));
      assert.equal(r.gotSha, r.sentSha);
      assert.equal(r.length, 70005);
    });

    test("transactions: COMMIT delivers, ABORT discards", async (t) => {
      if (!present(t)) return;
      const r = await run(fx, "transaction", fx.dest("/queue/", "py-tx"));
      assert.deepEqual(r, { beforeCommit: "outside", committed: ["tx-1", "tx-2"], afterAbort: "marker" });
    });
  });
}
