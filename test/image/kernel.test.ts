/**
 * The guest kernel's recipe on its own (server/src/image/kernel.ts, recipe.ts): the config fragment
 * parser, the check that Kconfig kept every option the fragment asks for, and the recipe's two
 * kernel kinds with their errors. The build itself runs in every image build (boot.test.ts).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfigFragment, unmetOptions } from "@vmc/server/image/kernel";
import { loadRecipe, projectRoot } from "@vmc/server/image/recipe";

const scratch = mkdtempSync(join(tmpdir(), "vmc-kernel-recipe-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

test("the fragment parser takes options and 'is not set' lines and rejects anything else", () => {
  const lines = parseConfigFragment('# a comment\n\nCONFIG_PVH=y\n# CONFIG_MODULES is not set\nCONFIG_NR_CPUS=64\nCONFIG_CMDLINE="x"\n');
  assert.deepEqual(lines, [
    { name: "CONFIG_PVH", value: "y" },
    { name: "CONFIG_MODULES", value: null },
    { name: "CONFIG_NR_CPUS", value: "64" },
    { name: "CONFIG_CMDLINE", value: '"x"' },
  ]);
  assert.throws(() => parseConfigFragment("CONFIG_PVH=y\nPVH=y\n"), /line 2: expected CONFIG_X=value/);
  assert.throws(() => parseConfigFragment("CONFIG_PVH=yes\n"), /line 1/);
});

test("an option Kconfig dropped or changed is reported; met ones are not", () => {
  const wanted = parseConfigFragment("CONFIG_PVH=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_MODULES is not set\n# CONFIG_KPROBES is not set\nCONFIG_HZ=100\n");
  const finalConfig = "CONFIG_PVH=y\n# CONFIG_VIRTIO_BLK is not set\nCONFIG_KPROBES=y\nCONFIG_HZ=250\n";
  assert.deepEqual(unmetOptions(wanted, finalConfig), [
    "CONFIG_VIRTIO_BLK: asked y, got not set",
    "CONFIG_KPROBES: asked not set, got y",
    "CONFIG_HZ: asked 100, got 250",
  ]);
  assert.deepEqual(unmetOptions(wanted, "CONFIG_PVH=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_HZ=100\n"), []);
});

test("guest/kernel.config parses and the recipe builds the kernel from it", () => {
  const guest = join(projectRoot(), "guest");
  const recipe = loadRecipe(guest);
  assert.equal(recipe.kernel.kind, "source");
  assert.ok(recipe.kernel.kind === "source" && parseConfigFragment(readFileSync(join(guest, recipe.kernel.config), "utf8")).some((l) => l.name === "CONFIG_PVH" && l.value === "y"));
});

test("the recipe's kernel is a source package with a config, or a binary package with modules, nothing else", () => {
  const base = JSON.parse(readFileSync(join(projectRoot(), "guest", "recipe.json"), "utf8")) as Record<string, unknown>;
  const load = (kernel: unknown) => {
    writeFileSync(join(scratch, "recipe.json"), JSON.stringify({ ...base, kernel }));
    return loadRecipe(scratch).kernel;
  };
  assert.deepEqual(load({ package: "linux-image-cloud-amd64", modules: ["virtio_blk"] }), { kind: "binary", package: "linux-image-cloud-amd64", modules: ["virtio_blk"] });
  assert.deepEqual(load({ source: "linux-source-6.1", config: "kernel.config" }), { kind: "source", package: "linux-source-6.1", config: "kernel.config" });
  assert.throws(() => load({ source: "linux-source-6.1", config: "../../etc/passwd" }), /kernel.config must name one of/);
  assert.throws(() => load({ source: "linux-source-6.1", package: "linux-image-cloud-amd64", config: "kernel.config" }), /kernel must be/);
  assert.throws(() => load({ package: "linux-image-cloud-amd64" }), /kernel.modules must be a list/);
  assert.throws(() => load(undefined), /kernel must be/);
});
