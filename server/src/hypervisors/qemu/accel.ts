/**
 * Chooses KVM only when /dev/kvm is *usable*: the device can exist and still be a nested
 * paravirtual KVM on which guests crash or crawl. The probe boots a real machine under KVM with
 * the CPU model the VMs get (`-cpu host`: on such a host QEMU fails to set its MSRs, while the
 * default model boots, slowly) — a 512-byte boot sector that loops 16 M times and exits through
 * isa-debug-exit — and expects it to finish quickly with the right exit code. The verdict is
 * cached in $VMC_HOME/accel.json per host kernel, QEMU binary and probe version;
 * `VMC_ACCEL=kvm|tcg` overrides it.
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
  /** Which probe decided (verdicts of an older probe are not trusted). */
  probe: number;
  probedAt: number;
}

const PROBE_VERSION = 2;

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

/** The verdict in $VMC_HOME/accel.json when it still holds for this host (or VMC_ACCEL's); never probes. */
export function cachedAccel(home: string, env: NodeJS.ProcessEnv = process.env): AccelVerdict | undefined {
  const forced = env.VMC_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: "VMC_ACCEL", kernel: release(), qemu: QEMU_SYSTEM, probe: PROBE_VERSION, probedAt: Date.now() };
  try {
    const cached = JSON.parse(readFileSync(join(home, "accel.json"), "utf8")) as AccelVerdict;
    const valid = cached.kernel === release() && cached.qemu === QEMU_SYSTEM && cached.probe === PROBE_VERSION && (cached.accel === "kvm" || cached.accel === "tcg");
    return valid ? cached : undefined;
  } catch {
    return undefined; // no verdict yet
  }
}

/** The accelerator to use here, probing once per host kernel and QEMU binary. */
export async function chooseAccel(home: string, env: NodeJS.ProcessEnv = process.env): Promise<AccelVerdict> {
  const cached = cachedAccel(home, env);
  if (cached) return cached;
  const kernel = release();
  const probe = PROBE_VERSION;
  let verdict: AccelVerdict;
  if (!kvmDeviceUsable()) {
    verdict = { accel: "tcg", reason: "/dev/kvm is missing or not accessible", kernel, qemu: QEMU_SYSTEM, probe, probedAt: Date.now() };
  } else {
    const failure = await probeBoot("kvm");
    verdict = failure
      ? { accel: "tcg", reason: `/dev/kvm is not usable: ${failure}`, kernel, qemu: QEMU_SYSTEM, probe, probedAt: Date.now() }
      : { accel: "kvm", reason: "probe boot under KVM succeeded", kernel, qemu: QEMU_SYSTEM, probe, probedAt: Date.now() };
  }
  mkdirSync(home, { recursive: true });
  writeAtomic(join(home, "accel.json"), `${JSON.stringify(verdict, null, 2)}\n`);
  return verdict;
}
