/** The guest agent's entry point when run as its own bundle (dist/agent.mjs). */
console.error("vmc agent: not built yet");
process.exitCode = 1;
