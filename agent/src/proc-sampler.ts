/**
 * Peak resident memory of process groups, sampled from /proc (Linux). One timer per agent
 * process, shared by every running command: each tick reads /proc/<pid>/stat for all pids,
 * sums the resident pages of each tracked group and keeps the maximum. Sampled every 250 ms
 * and ~10 ms after tracking starts, so it is a lower bound for very short peaks.
 */
import { readdirSync, readFileSync } from "node:fs";

const PAGE_BYTES = 4096;
const PERIOD_MS = 250;

const peaks = new Map<number, number>();
let timer: NodeJS.Timeout | undefined;
let soon: NodeJS.Timeout | undefined;

function sample(): void {
  let pids: string[];
  try {
    pids = readdirSync("/proc");
  } catch {
    return;
  }
  const sums = new Map<number, number>();
  for (const name of pids) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "latin1");
    } catch {
      continue;
    }
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const pgrp = Number(fields[2]);
    if (!peaks.has(pgrp)) continue;
    sums.set(pgrp, (sums.get(pgrp) ?? 0) + Number(fields[21]) * PAGE_BYTES);
  }
  for (const [pgrp, sum] of sums) if (sum > (peaks.get(pgrp) ?? 0)) peaks.set(pgrp, sum);
}

/** Starts tracking process group `pgid`; the returned function stops and gives the peak in bytes. */
export function trackPeakRss(pgid: number): () => number {
  peaks.set(pgid, 0);
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
    const peak = peaks.get(pgid) ?? 0;
    peaks.delete(pgid);
    if (peaks.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
    return peak;
  };
}
