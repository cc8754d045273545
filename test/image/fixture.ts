/**
 * The guest image for tests, built once per machine into a shared temp home (so every test file
 * of a run reuses it), and a QEMU boot of it with the broker forwarded as in production.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureGuestImage, type GuestImage } from "@vmc/server/image/index";
import { guestQemuArgs } from "@vmc/server/image/qemu";
import { Qmp } from "@vmc/server/image/qmp";
import { run } from "@vmc/server/image/run";
import { executable } from "../harness/components";

/** `$VMC_HOME` for image tests: in the temp dir, kept between runs as a cache (debs, node, kernels, images); scripts/test.mjs builds the image there first. */
export const imageTestHome = process.env.VMC_TEST_IMAGE_HOME ?? join(tmpdir(), "vmc-test-image-home");

export const qemuPresent = () => executable("/usr/bin/qemu-system-x86_64") && executable("/usr/bin/qemu-img");
export const imageToolsPresent = () => ["/usr/bin/apt-get", "/usr/sbin/mke2fs", "/usr/bin/zstd"].every(executable);

/** The image of this checkout in {@link imageTestHome}; images there unused for a day are removed (the home is a cache). */
export async function testImage(opts: { agentBundle?: string; onProgress?: (m: string) => void } = {}): Promise<GuestImage> {
  const image = await ensureGuestImage({ home: imageTestHome, ...opts });
  const now = new Date();
  utimesSync(image.dir, now, now);
  const images = join(imageTestHome, "images");
  for (const id of readdirSync(images)) {
    const dir = join(images, id);
    if (id !== image.id && Date.now() - statSync(dir).mtimeMs > 86_400_000) rmSync(dir, { recursive: true, force: true });
  }
  return image;
}

export interface BootedGuest {
  pid: number;
  serialLog: string;
  /** Resolves with QEMU's exit code once it has exited. */
  exited: Promise<number | null>;
  console(): string;
  qmp(command: string): Promise<unknown>;
  /** Kills QEMU's process group and removes the VM's temp dir. */
  destroy(): Promise<void>;
}

/** Boots `image` in QEMU (TCG) with its own overlay; the guest reaches 127.0.0.1:brokerPort as 10.0.2.100:61613. */
export async function bootGuest(image: GuestImage, brokerPort: number, vmcWords: string): Promise<BootedGuest> {
  const dir = mkdtempSync(join(tmpdir(), "vmc-image-vm-"));
  const overlay = join(dir, "state.qcow2");
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.baseDisk, overlay]);
  const serialLog = join(dir, "console.log");
  const qmpSocket = join(dir, "qmp.sock");
  const qemu = spawn("qemu-system-x86_64", guestQemuArgs(image, { overlay, brokerPort, qmpSocket, serialLog, vmcWords }), {
    detached: true,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => qemu.once("exit", (code) => resolve(code)));
  let qmp: Qmp | undefined;
  return {
    pid: qemu.pid!,
    serialLog,
    exited,
    console: () => {
      try {
        return readFileSync(serialLog, "utf8");
      } catch {
        return "";
      }
    },
    qmp: async (command) => {
      qmp ??= await Qmp.open(qmpSocket);
      return qmp.execute(command);
    },
    destroy: async () => {
      qmp?.close();
      try {
        process.kill(-qemu.pid!, "SIGKILL");
        await exited;
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
