/** A TCP port on 127.0.0.1 that was free a moment ago (the same helper the VM driver uses). */
export { freeLoopbackPort as freePort } from "@vmc/server/hypervisors/ports";
