import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadOrCreateControllerKeys, readControllerPublicKey } from "@vmc/server/store/keys";
import { publicKeyFromBase64, signMessage, verifyMessage } from "@vmc/protocol/signing";

function tempHome(t: { after: (fn: () => void) => void }): string {
  const home = mkdtempSync(join(tmpdir(), "vmc-keys-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  return home;
}

test("the key pair is created once, private key 0600, and then reloaded unchanged", (t) => {
  const home = tempHome(t);
  const first = loadOrCreateControllerKeys(home);
  assert.equal(statSync(first.privateKeyPath).mode & 0o777, 0o600);
  assert.equal(first.publicKey.length, 44);
  assert.equal(readFileSync(first.publicKeyPath, "utf8").trim(), first.publicKey);
  const again = loadOrCreateControllerKeys(home);
  assert.equal(again.publicKey, first.publicKey);
  assert.equal(readControllerPublicKey(home), first.publicKey);
  const signed = signMessage({ cmdId: "cmd-00000001" }, again.privateKey);
  assert.ok(verifyMessage(signed, publicKeyFromBase64(first.publicKey)));
});

test("a stale or tampered controller.pub is rewritten from the private key", (t) => {
  const home = tempHome(t);
  const keys = loadOrCreateControllerKeys(home);
  writeFileSync(keys.publicKeyPath, "AAAA\n");
  assert.equal(readControllerPublicKey(home), keys.publicKey);
  assert.equal(readFileSync(keys.publicKeyPath, "utf8").trim(), keys.publicKey);
});

test("a corrupt private key is an error that names the file, not a silent new key", (t) => {
  const home = tempHome(t);
  mkdirSync(join(home, "keys"));
  writeFileSync(join(home, "keys", "controller.key"), "not a key");
  assert.throws(() => loadOrCreateControllerKeys(home), /controller\.key/);
});

test("controllers racing to create the key all end up with the same one", async (t) => {
  const home = tempHome(t);
  const script = `import { readControllerPublicKey } from "@vmc/server/store/keys"; process.stdout.write(readControllerPublicKey(${JSON.stringify(home)}));`;
  const runs = Array.from({ length: 6 }, () =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.on("error", reject);
      child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
    }),
  );
  const keys = await Promise.all(runs);
  assert.equal(new Set(keys).size, 1, `different keys: ${keys.join(" ")}`);
  assert.equal(keys[0], readControllerPublicKey(home));
});
