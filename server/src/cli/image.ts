/** `vmc image build [--force] [--json] [--check]`: build (or find cached) the bootable guest image. */
import { parseArgs } from "node:util";
import { ensureGuestImage } from "../image/index";

const USAGE = `usage: vmc image build [--force] [--json] [--check]

Builds the guest image from Debian packages, Node and dist/agent.mjs into $VMC_HOME/images/<id>/
(reused when nothing changed). --check also boots it once in QEMU and prints the time from QEMU
start to the agent's first connection to the broker address.`;

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { force: { type: "boolean" }, json: { type: "boolean" }, check: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals[0] !== "build" || positionals.length > 1) {
    console.error(USAGE);
    return 2;
  }
  const log = (m: string) => (values.json ? console.error(`image: ${m}`) : console.log(`image: ${m}`));
  const image = await ensureGuestImage({ force: values.force ?? false, onProgress: log });
  let check: unknown;
  if (values.check) {
    const { bootCheck } = await import("../image/boot-check");
    const r = await bootCheck(image, { onProgress: log });
    check = r;
    log(`boot check: agent connected ${r.connectMs} ms after QEMU start; QEMU RSS ${r.rssMiB} MiB; ${r.shutdownMs === undefined ? "no power-down" : `powered down in ${r.shutdownMs} ms`}`);
  }
  if (values.json) console.log(JSON.stringify(check ? { ...image, check } : image, null, 2));
  else console.log(`${image.dir}\n  kernel  ${image.kernel}\n  initrd  ${image.initrd}\n  rootfs  ${image.rootfs}\n  base    ${image.baseDisk}\n  cmdline ${image.cmdline}`);
  return 0;
}
