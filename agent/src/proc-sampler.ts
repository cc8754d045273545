/**
 * Peak resident memory of commands' process trees, sampled from /proc (Linux). One timer per
 * agent process, shared by every running command: each tick walks each tracked wrapper's
 * descendants (`/proc/<pid>/task/<tid>/children`, so the cost follows the commands' own trees,
 * not the number of processes on the machine), sums their resident pages and keeps the maximum.
 * The wrapper itself is not counted. Kernels without `children` files fall back to one scan of
 * /proc by process group. Sampled every 250 ms and ~10 ms after tracking starts, so it is a
 * lower bound for very short peaks.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";

const PAGE_BYTES = 4096;
const PERIOD_MS = 250;
/** Enough for any real tree; bounds the work a fork bomb can cause per tick. */
const MAX_WALK = 4096;

const peaks = new Map<number, number>();
let timer: NodeJS.Timeout | undefined;
let soon: NodeJS.Timeout | undefined;
let childrenFiles: boolean | undefined;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "latin1");
  } catch {
    return undefined;
  }
}

/** Fields of /proc/<pid>/stat after the command name (index 0 = state). */
function statFields(pid: number | string): string[] | undefined {
  const stat = read(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

function childrenOf(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const tid of tasks) {
    const text = read(`/proc/${pid}/task/${tid}/children`);
    if (text) for (const c of text.split(" ")) if (c) out.push(Number(c));
  }
  return out;
}

function treeRss(root: number): number {
  let sum = 0;
  const queue = childrenOf(root);
  for (let i = 0; i < queue.length && i < MAX_WALK; i++) {
    const pid = queue[i] as number;
    const fields = statFields(pid);
    if (!fields) continue;
    sum += Number(fields[21]) * PAGE_BYTES;
    queue.push(...childrenOf(pid));
  }
  return sum;
}

function groupScan(): Map<number, number> {
  const sums = new Map<number, number>();
  let pids: string[];
  try {
    pids = readdirSync("/proc");
  } catch {
    return sums;
  }
  for (const name of pids) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const fields = statFields(name);
    if (!fields) continue;
    const pgrp = Number(fields[2]);
    if (!peaks.has(pgrp) || Number(name) === pgrp) continue;
    sums.set(pgrp, (sums.get(pgrp) ?? 0) + Number(fields[21]) * PAGE_BYTES);
  }
  return sums;
}

function sample(): void {
  if (peaks.size === 0) return;
  childrenFiles ??= existsSync(`/proc/${process.pid}/task/${process.pid}/children`);
  const sums = childrenFiles ? new Map([...peaks.keys()].map((root) => [root, treeRss(root)])) : groupScan();
  for (const [root, sum] of sums) if (sum > (peaks.get(root) ?? 0)) peaks.set(root, sum);
}

/**
 * Starts tracking the tree under `wrapperPid` (also its process group id); the returned
 * function stops and gives the peak in bytes.
 */
export function trackPeakRss(wrapperPid: number): () => number {
  peaks.set(wrapperPid, 0);
  if (!soon) {
    // One early sample shared by every command started in the same 10 ms (a fan-out starts many).
    soon = setTimeout(() => {
      soon = undefined;
      sample();
    }, 10);
    soon.unref();
  }
  if (!timer) {
    timer = setInterval(sample, PERIOD_MS);
    timer.unref();
  }
  return () => {
    const peak = peaks.get(wrapperPid) ?? 0;
    peaks.delete(wrapperPid);
    if (peaks.size === 0) {
      clearInterval(timer);
      clearTimeout(soon);
      timer = soon = undefined;
    }
    return peak;
  };
}
