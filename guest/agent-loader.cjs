"use strict";
// Starts the guest agent from V8's code cache. Under TCG, parsing and compiling the agent bundle
// is a large part of the boot; the image build compiles it once with this same Node binary and
// stores the code cache next to a CommonJS copy of the bundle (docs/GUEST.md).
//   node agent-loader.cjs                      run /usr/lib/vmc/agent.cjs with its code cache
//   node agent-loader.cjs --produce-cache FILE  (image build) run FILE --help, write FILE.cache
const { readFileSync, writeFileSync } = require("node:fs");
const { dirname } = require("node:path");
const Module = require("node:module");
const vm = require("node:vm");

const produce = process.argv[2] === "--produce-cache";
const file = produce ? process.argv[3] : `${__dirname}/agent.cjs`;
const cacheFile = `${file}.cache`;
let cachedData;
if (!produce) {
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // no cache: V8 compiles as usual
  }
}
const script = new vm.Script(Module.wrap(readFileSync(file, "utf8")), {
  filename: file,
  cachedData,
  ...(vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER ? { importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER } : {}),
});
if (cachedData && script.cachedDataRejected) process.stderr.write("vmc agent: code cache rejected (different Node or flags); compiling\n");
const agentModule = new Module(file, null);
agentModule.filename = file;
if (produce) process.argv = [process.argv[0], file, "--help"];
else process.argv = [process.argv[0], file, ...process.argv.slice(2)];
script.runInThisContext()(agentModule.exports, Module.createRequire(file), agentModule, file, dirname(file));
// After the top level ran, the cache also holds the functions compiled so far (lazily compiled ones included).
if (produce) setImmediate(() => writeFileSync(cacheFile, script.createCachedData()));
