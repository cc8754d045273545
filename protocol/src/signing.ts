/**
 * Ed25519 signatures on controller → agent messages. The controller signs the canonical JSON
 * of a message (without `signature`); an agent verifies with the controller's public key, which
 * travels as 44 characters of base64 (raw 32-byte key) so it fits a kernel command line.
 * @packageDocumentation
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { signedPayload } from "./bus";

/** DER prefix that turns a raw 32-byte Ed25519 key into an SPKI structure. */
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export interface ControllerKeyPair {
  /** PKCS#8 PEM; stays in $VMC_HOME with mode 0600. */
  privateKeyPem: string;
  /** Raw public key, base64 (44 characters). */
  publicKey: string;
}

export function generateControllerKeyPair(): ControllerKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicKey: rawPublicKey(publicKey) };
}

export function rawPublicKey(key: KeyObject): string {
  return key.export({ type: "spki", format: "der" }).subarray(SPKI_ED25519_PREFIX.length).toString("base64");
}

/** Parses a base64 raw public key; throws on anything that is not 32 bytes. */
export function publicKeyFromBase64(base64: string): KeyObject {
  const raw = Buffer.from(base64, "base64");
  if (raw.length !== 32) throw new Error("an Ed25519 public key is 32 bytes of base64");
  // As a JWK, OpenSSL 3 takes the raw key as it is; as DER it goes through its decoder search, which
  // took twice as long for a guest agent's first key under TCG (~25 vs ~13 ms under qemu-user).
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
}

export function privateKeyFromPem(pem: string): KeyObject {
  return createPrivateKey(pem);
}

/** Returns the message with its `signature` set. */
export function signMessage<T extends object>(message: T, privateKey: KeyObject): T & { signature: string } {
  const signature = sign(null, Buffer.from(signedPayload(message)), privateKey).toString("base64");
  return { ...message, signature };
}

/** True when `signature` is the controller's over the rest of the message. Never throws. */
export function verifyMessage(message: object, publicKey: KeyObject): boolean {
  const { signature } = message as { signature?: unknown };
  if (typeof signature !== "string" || signature === "") return false;
  try {
    return verify(null, Buffer.from(signedPayload(message)), publicKey, Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}
