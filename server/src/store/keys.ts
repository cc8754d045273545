/**
 * The controller's Ed25519 key pair, kept in `$VMC_HOME/keys`:
 * - `controller.key`: PKCS#8 PEM private key, mode 0600 (the only secret);
 * - `controller.pub`: the raw public key as one line of base64 (44 characters), for agents and
 *   VM images; always re-derivable from the private key.
 *
 * The pair is created on first use. Creation is atomic and safe when several controllers race:
 * each writes a complete private key to its own temporary file and `link()`s it into place; the
 * link fails for every process but the first, and the losers adopt the winner's key. No reader
 * ever sees a half-written key.
 * @packageDocumentation
 */
import { createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateControllerKeyPair, privateKeyFromPem, rawPublicKey } from "@vmc/protocol/signing";

export interface ControllerKeys {
  /** Signs CMD_RUN, CMD_INPUT and CMD_CANCEL (see `signMessage` in @vmc/protocol/signing). */
  privateKey: KeyObject;
  /** Raw public key, base64 (44 characters): what an agent's `--key` / config takes. */
  publicKey: string;
  privateKeyPath: string;
  publicKeyPath: string;
}

/** `$VMC_HOME/keys`. */
export function keysDir(home: string): string {
  return join(home, "keys");
}

/**
 * Loads the controller key pair from `home`/keys, creating it on first use.
 * Throws when the private key file exists but is not a valid Ed25519 PKCS#8 PEM.
 */
export function loadOrCreateControllerKeys(home: string): ControllerKeys {
  const dir = keysDir(home);
  const privateKeyPath = join(dir, "controller.key");
  const publicKeyPath = join(dir, "controller.pub");
  let pem = readIfExists(privateKeyPath);
  if (pem === undefined) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    pem = createOnce(dir, privateKeyPath);
  }
  const privateKey = parsePrivateKey(pem, privateKeyPath);
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  if (readIfExists(publicKeyPath)?.trim() !== publicKey) writeAtomically(dir, publicKeyPath, `${publicKey}\n`, 0o644);
  return { privateKey, publicKey, privateKeyPath, publicKeyPath };
}

/**
 * The controller's public key (base64 raw, 44 characters) — what agents and VM images must be
 * configured with. Creates the pair when there is none yet, so the key handed to an agent is
 * always the one this `$VMC_HOME` will sign with.
 */
export function readControllerPublicKey(home: string): string {
  return loadOrCreateControllerKeys(home).publicKey;
}

function createOnce(dir: string, privateKeyPath: string): string {
  const pem = generateControllerKeyPair().privateKeyPem;
  const tmp = join(dir, `.controller.key.${process.pid}.${randomBytes(6).toString("hex")}`);
  writeFileSync(tmp, pem, { mode: 0o600, flag: "wx" });
  chmodSync(tmp, 0o600);
  try {
    linkSync(tmp, privateKeyPath);
    return pem;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return readFileSync(privateKeyPath, "utf8");
  } finally {
    unlinkSync(tmp);
  }
}

function writeAtomically(dir: string, path: string, content: string, mode: number): void {
  const tmp = join(dir, `.tmp.${process.pid}.${randomBytes(6).toString("hex")}`);
  writeFileSync(tmp, content, { mode, flag: "wx" });
  renameSync(tmp, path);
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function parsePrivateKey(pem: string, path: string): KeyObject {
  let key: KeyObject;
  try {
    key = privateKeyFromPem(pem);
  } catch (err) {
    throw new Error(`${path} is not a readable private key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`${path} is a ${key.asymmetricKeyType} key; the controller key must be Ed25519`);
  return key;
}
