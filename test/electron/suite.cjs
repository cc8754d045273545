// Runs inside the VS Code extension host (scripts/test-electron.mjs): the extension activates
// from this checkout, contributes its views and commands, and its controller answers.
const assert = require("node:assert/strict");
const vscode = require("vscode");

exports.run = async function run() {
  const ext = vscode.extensions.getExtension("vmc.vm-controller");
  assert.ok(ext, "the extension vmc.vm-controller is loaded");
  await ext.activate();
  assert.equal(ext.isActive, true);
  const commands = await vscode.commands.getCommands(true);
  for (const id of ["vmc.machine.start", "vmc.machine.pause", "vmc.machine.resume", "vmc.machine.snapshot", "vmc.machine.openTerminal", "vmc.command.run", "vmc.machine.upload"]) {
    assert.ok(commands.includes(id), `command ${id} is registered`);
  }
  // The Machines view exists and can be shown (VS Code's generated <viewId>.focus command).
  await vscode.commands.executeCommand("vmc.machines.focus");
};
