// Manual smoke of the extension in code-server (not part of the suite): `npx tsx test/ext/try.debug.ts`
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProcessDriver } from "@vmc/server/hypervisors/process/driver";
import { startEmbeddedBroker, vmcBundle } from "../harness/embedded-broker";
import { startWorkbench } from "../harness/workbench";

const broker = await startEmbeddedBroker();
const home = mkdtempSync(join(tmpdir(), "vmc-ext-try-"));
const env = { ...process.env, VMC_HOME: home, VMC_BROKER: broker.url };
execFileSync(process.execPath, [vmcBundle, "vm", "create", "p1", "--driver", "process"], { env, stdio: "inherit" });
const t0 = Date.now();
const row = async (name: RegExp, timeout = 10_000) => {
  const r = wb.page.getByRole("treeitem", { name }).first();
  await r.waitFor({ state: "visible", timeout });
  return r;
};
const wb = await startWorkbench({ name: "ext-try", vsix: join(process.cwd(), "dist/vm-controller.vsix"), env: { VMC_HOME: home }, settings: { "vmc.brokerUrl": broker.url }, viewport: { width: 1400, height: 900 } });
const only = process.env.ONLY ? new RegExp(process.env.ONLY) : undefined;
const step = async (name: string, f: () => Promise<unknown>) => {
  if (only && !only.test(name)) return;
  const t = Date.now();
  try {
    const r = await f();
    console.log(`ok   ${name} (${Date.now() - t} ms)${r ? `: ${String(r).slice(0, 300)}` : ""}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${(e as Error).message.split("\n").slice(0, 4).join(" | ")}`);
    await wb.shot(`fail-${name}`).catch(() => undefined);
  }
};
try {
  console.log("started", Date.now() - t0);
  writeFileSync(join(wb.folder, "hello.txt"), "hi from host\n");
  const showVmc = async () => {
    const item = wb.page.locator('.activitybar .action-item a[aria-label^="VM Controller"]');
    await item.waitFor({ timeout: 60_000 });
    if (!(await wb.page.locator('.pane-header[aria-label^="Machines"]').first().isVisible())) await item.click();
    await wb.page.locator('.pane-header[aria-label^="Machines"]').first().waitFor({ timeout: 30_000 });
  };
  await step("activity", showVmc);
  await step("machine row", async () => row(/Machine p1, stopped/, 30_000));
  await wb.shot("machines");
  await step("start inline", async () => wb.inlineAction(await row(/Machine p1/), "Start Machine"));
  await step("running", async () => row(/Machine p1, running/, 30_000));
  await step("terminal", async () => {
    await wb.contextMenu(await row(/Machine p1/), "Open Terminal in Machine");
    await wb.waitTerminal(/p1\$/);
    await wb.typeInTerminal("uname -a\r");
    return wb.waitTerminal(/\[exit 0\]/);
  });
  await step("ctrl-c", async () => {
    await wb.typeInTerminal("sleep 100\r");
    await new Promise((r) => setTimeout(r, 1500));
    await wb.page.keyboard.press("Control+c");
    return wb.waitTerminal(/\[cancelled|\[exit 1[0-9]{2}\]/, 20_000);
  });
  await wb.shot("terminal");
  await step("pause", async () => {
    await wb.contextMenu(await row(/Machine p1, running/), "Pause Machine");
    return row(/Machine p1, paused/, 20_000);
  });
  await step("resume", async () => {
    await wb.contextMenu(await row(/Machine p1, paused/), "Resume Machine");
    return row(/Machine p1, running/, 20_000);
  });
  await step("snapshot", async () => {
    await wb.contextMenu(await row(/Machine p1/), "Take Snapshot…");
    await wb.quickInput("s1");
    await wb.notification(/Taking snapshot/, 5000).catch(() => undefined);
    await (await row(/Machine p1/)).click();
    await (await row(/Snapshots of p1/)).click();
    return row(/Snapshot s1 of p1/, 60_000);
  });
  await wb.shot("snapshot");
  await step("guest file edit", async () => {
    await wb.typeInTerminal("echo hello-guest > /tmp/g.txt\r");
    await wb.waitTerminal(/hello-guest > \/tmp\/g.txt\s*\[exit 0\]/);
    await wb.runCommand("VM Controller: Open Guest File…");
    await wb.quickPick("p1");
    await wb.quickInput("/tmp/g.txt");
    const editor = wb.page.locator(".editor-instance .monaco-editor").first();
    await editor.waitFor({ timeout: 20_000 });
    await wb.page.locator(".view-lines", { hasText: "hello-guest" }).first().waitFor({ timeout: 20_000 });
    await editor.click();
    await wb.page.keyboard.press("Control+End");
    await wb.page.keyboard.type("edited-in-editor");
    await wb.page.keyboard.press("Control+s");
    await wb.page.locator(".tab.dirty").first().waitFor({ state: "detached", timeout: 20_000 }).catch(() => undefined);
    await wb.shot("edited");
    await wb.page.locator(".terminal-wrapper").last().click();
    await wb.typeInTerminal("cat /tmp/g.txt\r");
    return wb.waitTerminal(/edited-in-editor/, 20_000);
  });
  await step("upload via palette", async () => {
    await wb.runCommand("VM Controller: Upload…");
    await wb.quickPick("p1");
    await wb.quickInput(join(wb.folder, "hello.txt"));
    await wb.quickInput("/tmp");
    await wb.page.locator(".monaco-list-row", { hasText: /Upload hello.txt to p1/ }).first().waitFor({ timeout: 20_000 }).catch(() => undefined);
    await wb.page.locator(".terminal-wrapper").last().click();
    await wb.typeInTerminal("cat /tmp/hello.txt\r");
    return wb.waitTerminal(/hi from host/, 30_000);
  });
  await wb.shot("uploaded");
  await step("run on machines", async () => {
    await wb.runCommand("VM Controller: Run Command on Machines…");
    const input = wb.page.locator(".quick-input-widget .quick-input-box input");
    await input.fill("p*");
    await wb.page.locator(".quick-input-widget .monaco-list-row", { hasText: /1 agent match/ }).first().waitFor({ timeout: 20_000 });
    await wb.shot("target-preview");
    await input.press("Enter");
    await wb.quickInput("echo from-palette-$((6*7))");
    return wb.page.locator(".view-lines", { hasText: "from-palette-42" }).first().waitFor({ timeout: 30_000 });
  });
  await wb.shot("run-output");
  await step("server restart keeps the views", async () => {
    const pids = execFileSync("pgrep", ["-f", `${home.split("/").pop()}|vmc-workbench.*dist/vmc.mjs serve --stdio`]).toString().trim().split("\n").map(Number);
    const serve = pids.filter((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("serve\0--stdio"); } catch { return false; } });
    for (const pid of serve) process.kill(pid, "SIGKILL");
    await wb.page.locator(".statusbar-item", { hasText: /VMC: (stopped|starting)/ }).first().waitFor({ timeout: 20_000 }).catch(() => undefined);
    await row(/Machine p1, running/, 5_000);
    await wb.page.locator(".statusbar-item", { hasText: "VMC: connected" }).first().waitFor({ timeout: 60_000 });
    await row(/Machine p1, running/, 30_000);
    return `killed ${serve.join(",")}`;
  });
  await wb.shot("after-restart");
  console.log(wb.log().split("\n").filter((l) => /vmc|error/i.test(l)).slice(-20).join("\n"));
} finally {
  await wb.close();
  const driver = new ProcessDriver(home);
  for (const r of driver.store.list()) await driver.delete(r.name, { force: true }).catch(() => undefined);
  await broker.stop();
}
