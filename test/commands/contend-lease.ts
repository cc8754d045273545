/**
 * One contender for a controller slot (test/commands/lease.test.ts): on "go" takes a lease and
 * prints its slot, on "release" releases it and prints "released".
 */
import { createInterface } from "node:readline";
import { acquireControllerLease, type ControllerLease } from "@vmc/server/store/controller-lease";

const [home] = process.argv.slice(2) as [string];
let lease: ControllerLease | undefined;
console.log("ready");
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "go") {
    lease = acquireControllerLease(home, { maxSlots: 16 });
    console.log(`slot ${lease.slot} ${lease.instanceId}`);
  } else {
    lease?.release();
    console.log("released");
  }
}
