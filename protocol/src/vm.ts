/**
 * Virtual machine state, shared by every driver, the controller API and the editor.
 * @packageDocumentation
 */
import { z } from "zod";

/**
 * The one state enum used everywhere.
 * - `stopped`: defined, not running; `starting`: process up, guest booting;
 * - `running`; `paused`: vCPUs frozen, memory kept; `saved`: state saved to disk, no process;
 * - `stopping`: graceful shutdown in progress; `error`: the driver could not tell (see reason).
 */
export const VmState = z.enum(["stopped", "starting", "running", "paused", "saved", "stopping", "error"]);
export type VmState = z.infer<typeof VmState>;

/** A VM name: also its agent id unless told otherwise. */
export const VmName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "a VM name is dot-separated words of letters, digits, '-' and '_'");
export type VmName = z.infer<typeof VmName>;

export const DriverName = z.enum(["qemu", "virtualbox", "process"]);
export type DriverName = z.infer<typeof DriverName>;
