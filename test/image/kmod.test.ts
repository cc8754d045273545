/**
 * The module signature strip of the image build (server/src/image/kmod.ts) on synthetic modules:
 * a signed module loses exactly its appended signature; an unsigned or malformed one is kept.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { stripModuleSignature } from "@vmc/server/image/kmod";

const MAGIC = Buffer.from("~Module signature appended~\n", "latin1");

function signed(module: Buffer, sig: Buffer, sigLen = sig.length): Buffer {
  const info = Buffer.alloc(12);
  info[2] = 2; // id_type PKEY_ID_PKCS7
  info.writeUInt32BE(sigLen, 8);
  return Buffer.concat([module, sig, info, MAGIC]);
}

test("stripModuleSignature: a signed module loses its signature, anything else is kept", () => {
  const elf = Buffer.concat([Buffer.from("\x7fELF", "latin1"), Buffer.alloc(200, 7)]);
  assert.deepEqual(stripModuleSignature(signed(elf, Buffer.alloc(500, 9))), elf);
  assert.equal(stripModuleSignature(elf), elf, "unsigned");
  const bogus = signed(elf, Buffer.alloc(10), 1_000_000);
  assert.equal(stripModuleSignature(bogus), bogus, "a signature length past the start");
  assert.equal(stripModuleSignature(MAGIC), MAGIC, "too short");
});
