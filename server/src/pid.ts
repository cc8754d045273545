/** Process ids of other processes (QEMU, brokers, lock holders, builds). */

/** True while a process with this pid exists, also one of another user (EPERM). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
