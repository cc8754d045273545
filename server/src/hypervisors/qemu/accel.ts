/**
 * Chooses KVM only when /dev/kvm is *usable*: the device can exist and still be a nested
 * paravirtual KVM on which guests crash or crawl. The probe boots a real machine under KVM
 * (a 512-byte boot sector that loops 16 M times and exits through isa-debug-exit) and expects
 * it to finish quickly with the right exit code. The verdict is cached in $VMC_HOME/accel.json
 * per host kernel and QEMU binary; `VMC_ACCEL=kvm|tcg` overrides it.
 */
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { writeAtomic } from "../../store/vms";
import type { Accel } from "./command";
import { QEMU_SYSTEM, run } from "./exec";

export interface AccelVerdict {
  accel: Accel;
  reason: string;
  kernel: string;
  qemu: string;
  probedAt: number;
}

const PROBE_EXIT = 0x31;
const PROBE_TIMEOUT_MS = 5000;

/** mov ecx,0x01000000; a32 loop $; mov al,0x31; out 0xf4,al; hlt; jmp $-1 — then the boot signature. */
export function probeBootSector(): Buffer {
  const code = Buffer.from([0x66, 0xb9, 0x00, 0x00, 0x00, 0x01, 0x67, 0xe2, 0xfe, 0xb0, PROBE_EXIT, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
  const sector = Buffer.alloc(512);
  code.copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

function kvmDeviceUsable(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Boots the probe under `accel`; resolves with null on success, else why it failed. */
export async function probeBoot(accel: Accel): Promise<string | null> {
  const dir = mkdtempSync(join(tmpdir(), "vmc-accel-"));
  try {
    const disk = join(dir, "probe.img");
    writeFileSync(disk, probeBootSector());
    const started = Date.now();
    const r = await run(
      QEMU_SYSTEM,
      // The CPU model the VMs use: a nested KVM can run the default model and still abort on
      // `-cpu host` (it sets MSRs the outer hypervisor refuses, e.g. 0x10a).
      ["-accel", accel, ...(accel === "kvm" ? ["-cpu", "host"] : []), "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-drive", `file=${disk},format=raw,if=ide`, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
      PROBE_TIMEOUT_MS,
    );
    // isa-debug-exit makes QEMU exit with (value << 1) | 1.
    if (r.code === ((PROBE_EXIT << 1) | 1)) return null;
    if (r.signal) return `probe boot did not finish within ${PROBE_TIMEOUT_MS} ms`;
    return `probe boot failed (exit ${r.code}): ${r.stderr.trim().split("\n")[0] ?? ""} after ${Date.now() - started} ms`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The accelerator to use here, probing once per host kernel and QEMU binary. */
export async function chooseAccel(home: string, env: NodeJS.ProcessEnv = process.env): Promise<AccelVerdict> {
  const forced = env.VMC_ACCEL;
  const kernel = release();
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: "VMC_ACCEL", kernel, qemu: QEMU_SYSTEM, probedAt: Date.now() };
  const cache = join(home, "accel.json");
  try {
    const cached = JSON.parse(readFileSync(cache, "utf8")) as AccelVerdict;
    if (cached.kernel === kernel && cached.qemu === QEMU_SYSTEM && (cached.accel === "kvm" || cached.accel === "tcg")) return cached;
  } catch {
    // no verdict yet
  }
  let verdict: AccelVerdict;
  if (!kvmDeviceUsable()) {
    verdict = { accel: "tcg", reason: "/dev/kvm is missing or not accessible", kernel, qemu: QEMU_SYSTEM, probedAt: Date.now() };
  } else {
    const failure = await probeBoot("kvm");
    verdict = failure
      ? { accel: "tcg", reason: `/dev/kvm is not usable: ${failure}`, kernel, qemu: QEMU_SYSTEM, probedAt: Date.now() }
      : { accel: "kvm", reason: "probe boot under KVM succeeded", kernel, qemu: QEMU_SYSTEM, probedAt: Date.now() };
  }
  mkdirSync(home, { recursive: true });
  writeAtomic(cache, `${JSON.stringify(verdict, null, 2)}\n`);
  return verdict;
}
