/**
 * A throwaway OpenSSH server on a loopback port: own config, host key and client key in a temp
 * dir, `/usr/sbin/sshd -D -e -f CONFIG -p PORT`, in its own process group.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { executable } from "../harness/components";
import { freePort } from "../harness/ports";

export const SSHD = "/usr/sbin/sshd";
export const sshdInstalled = () => executable(SSHD) && executable("/usr/bin/ssh-keygen");

export interface Sshd {
  host: string;
  port: number;
  username: string;
  /** Client private key (OpenSSH format) accepted by this server. */
  keyPath: string;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

export async function startSshd(): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), "vmc-sshd-"));
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "client_key")]);
  writeFileSync(join(dir, "authorized_keys"), readFileSync(join(dir, "client_key.pub")));
  const port = await freePort();
  const sftpServer = existsSync("/usr/lib/openssh/sftp-server") ? "/usr/lib/openssh/sftp-server" : "internal-sftp";
  writeFileSync(
    join(dir, "sshd_config"),
    [
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin yes",
      "StrictModes no",
      "UsePAM no",
      "LogLevel ERROR",
      `Subsystem sftp ${sftpServer}`,
      "",
    ].join("\n"),
  );
  const child = spawn(SSHD, ["-D", "-e", "-f", join(dir, "sshd_config"), "-p", String(port)], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const banner = await new Promise<string>((resolve) => {
      const s = connect({ host: "127.0.0.1", port });
      s.once("data", (d) => (s.destroy(), resolve(d.toString())));
      s.once("error", () => resolve(""));
    });
    if (banner.startsWith("SSH-2.0")) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`sshd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: "127.0.0.1",
    port,
    username: userInfo().username,
    keyPath: join(dir, "client_key"),
    dir,
    log: () => log,
    stop: async () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
