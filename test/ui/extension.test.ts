/**
 * The extension end to end, as a user drives it: the .vsix that `npm run package` builds,
 * installed into a real VS Code workbench (code-server) in Chromium, its controller (`vmc serve
 * --stdio`, started by the extension) on an embedded broker, and a real QEMU VM. Each step
 * acts through the UI only and checks the outcome through a separate path (the guest's agent
 * or the `vmc` CLI), and leaves a screenshot in test-artifacts/ui/extension/.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Locator } from "playwright-core";
import { requireComponent } from "../harness/components";
import { startEmbeddedBroker, vmcBundle, type EmbeddedBroker } from "../harness/embedded-broker";
import { chromiumInstalled, codeServerInstalled, repoRoot, startWorkbench, type Workbench } from "../harness/workbench";
import { qemuInstalled, removeHome, startController, tempHome, testImage, type Controller } from "../vm/harness";

const VM = "vm1";
const vsix = join(repoRoot, "dist", "vm-controller.vsix");
const bootDeadlineMs = 180_000;
const dropped = `dropped ${process.pid} ${Date.now()}\n`;

/** `vmc <args>` with this test's home and broker; returns stdout, throws with stderr on failure. */
function vmc(home: string, brokerUrl: string, args: string[]): string {
  const r = spawnSync(process.execPath, [vmcBundle, ...args, "--broker", brokerUrl], { env: { ...process.env, VMC_HOME: home }, encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`vmc ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stderr}`);
  return r.stdout;
}

/** The VM's state as the CLI reports it (from the hypervisor, not the extension). */
function cliState(home: string, brokerUrl: string): string {
  const vms = JSON.parse(vmc(home, brokerUrl, ["vm", "ls", "--json"])) as Array<{ name: string; state: string }>;
  return vms.find((v) => v.name === VM)?.state ?? "absent";
}

/** What the row's state icon is: a codicon class or a themed image (for comparing before/after). */
async function iconOf(row: Locator): Promise<string> {
  const icon = row.locator(".custom-view-tree-node-item-icon").first();
  const cls = (await icon.getAttribute("class")) ?? "";
  const codicon = /codicon-[\w-]+/.exec(cls)?.[0];
  // A themed image is set inline as the icon's background-image.
  return codicon ?? (await icon.getAttribute("style")) ?? "";
}

describe("VS Code extension in a real workbench, on a real QEMU VM", { timeout: 900_000 }, () => {
  const ready = qemuInstalled && codeServerInstalled && chromiumInstalled;
  let home = "";
  let broker: EmbeddedBroker | undefined;
  let controller: Controller | undefined;
  let wb: Workbench | undefined;

  before(async () => {
    if (!ready) return;
    const pack = spawnSync("npm", ["run", "package"], { cwd: repoRoot, encoding: "utf8", timeout: 300_000 });
    if (pack.status !== 0 || !existsSync(vsix)) throw new Error(`npm run package failed:\n${pack.stdout}\n${pack.stderr}`);
    const image = await testImage();
    home = tempHome("vmc-ui-");
    broker = await startEmbeddedBroker();
    vmc(home, broker.url, ["vm", "create", VM, "--image", dirname(image.kernel), "--no-template"]);
    controller = await startController(home, broker.url);
    const folder = join(home, "workspace");
    mkdirSync(folder);
    writeFileSync(join(folder, "drop-me.txt"), dropped);
    wb = await startWorkbench({
      name: "extension",
      vsix,
      folder,
      // Auto-save off: a tab shows no dirty marker while it is "saving" (which auto-save makes it
      // from the first keystroke), so only with saves made by hand does the marker say "saved".
      settings: { "vmc.home": home, "vmc.brokerUrl": broker.url, "vmc.uploadDirectory": "/tmp", "files.autoSave": "off" },
      env: { VMC_HOME: home, VMC_BROKER: broker.url },
      viewport: { width: 1400, height: 1100 },
    });
    // The extension activated, started its controller and the controller reached the broker.
    await wb.statusItem(/VMC: connected/, 180_000);
  });

  after(async () => {
    await wb?.close();
    await controller?.close().catch(() => undefined);
    if (home) removeHome(home);
    await broker?.stop();
  });

  /** Machines view row of the VM; its accessible name carries the state. */
  const machine = (state?: string) => wb!.row("Machines", new RegExp(`^Machine ${VM}, ${state ?? "\\w+"}$`));

  let failedStep: string | undefined;
  /**
   * Runs one UI step; on failure saves a screenshot named after it before rethrowing. Every later
   * step needs the VM listed and running, so when a `fatal` step fails the rest fail at once,
   * naming it.
   */
  async function step(name: string, body: (w: Workbench) => Promise<void>, fatal = false): Promise<void> {
    if (failedStep) throw new Error(`not run: the earlier step "${failedStep}" failed`);
    try {
      await body(wb!);
      await wb!.shot(name);
    } catch (e) {
      if (fatal) failedStep = name;
      await wb?.shot(`${name}-FAILED`).catch(() => undefined);
      // A menu or input left open by the failure would block every later step.
      await wb?.page.keyboard.press("Escape").catch(() => undefined);
      throw e;
    }
  }

  it("shows the VM in the Machines view", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready, "run scripts/provision")) return;
    await step("machines-view", async (w) => {
      await w.openContainer("VM Controller");
      await w.view("Machines");
      await machine("stopped").waitFor({ state: "visible", timeout: 60_000 });
    }, true);
  });

  it("starts the VM from the tree and its agent comes online", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    await step("started", async (w) => {
      await w.inlineAction(machine("stopped"), "Start Machine");
      await machine("running").waitFor({ state: "visible", timeout: bootDeadlineMs });
      await controller!.waitHello(VM, bootDeadlineMs);
      assert.equal(cliState(home, broker!.url), "running");
    }, true);
  });

  it("runs uname -a in a terminal and shows its output and exit code", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    await step("terminal-uname", async (w) => {
      const expected = (await controller!.sh(VM, "uname -a", 60_000)).trim();
      await w.contextMenu(machine("running"), "Open Terminal in Machine");
      await w.waitTerminal(new RegExp(`${VM}\\$`), 60_000);
      await w.typeInTerminal("uname -a\r");
      const text = await w.waitTerminal(/\[exit 0\]/, 60_000);
      assert.ok(text.includes(expected.slice(0, 60)), `terminal shows the guest's uname (${expected}):\n${text}`);
    });
  });

  it("cancels sleep 100 with Ctrl-C", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    await step("terminal-ctrl-c", async (w) => {
      const started = Date.now();
      await w.typeInTerminal("sleep 100\r");
      await w.row("Commands", /, running$/).waitFor({ state: "visible", timeout: 60_000 });
      // The row turns "running" when the agent hands the command to its waiting wrapper, whose exec
      // of sleep follows a moment later: the guest looks for it until it shows, for at most 10 s.
      const findSleep = "i=0; until ps -o args | grep '^sleep 100' || [ $((i += 1)) -gt 200 ]; do usleep 50000; done; true";
      assert.match(await controller!.sh(VM, findSleep, 30_000), /sleep 100/, "the sleep runs in the guest");
      await w.page.keyboard.press("Control+c");
      await w.waitTerminal(/\[cancelled\b[^\]]*\]\s*\n.*vm1\$/, 30_000);
      assert.ok(Date.now() - started < 90_000, "cancelled long before the sleep would have ended");
      assert.equal((await controller!.sh(VM, "ps -o args | grep '^sleep 100' || true", 30_000)).trim(), "", "no sleep left in the guest");
    });
  });

  it("uploads a file dropped from the Explorer onto the machine", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    await step("dropped-file", async (w) => {
      await w.dragFromExplorer("drop-me.txt", "VM Controller", machine("running"));
      await w.view("Transfers");
      await w.row("Transfers", new RegExp(`^Transfer Upload drop-me\\.txt to ${VM}:/tmp, done$`)).waitFor({ state: "visible", timeout: 60_000 });
      assert.equal(await controller!.sh(VM, "cat /tmp/drop-me.txt"), dropped);
    });
  });

  it("opens a guest file through vmc:, edits and saves it", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    const edited = `edited in the workbench ${Date.now()}`;
    await step("guest-file-saved", async (w) => {
      await controller!.sh(VM, "mkdir -p /tmp/ui && printf 'first line\\n' > /tmp/ui/edit-me.txt");
      await w.treeItem("Machines", new RegExp(`^Machine ${VM}`));
      await expand(w, machine("running"));
      await expand(w, await w.reveal("Machines", w.row("Machines", /^Files/)));
      await expand(w, await w.reveal("Machines", w.row("Machines", /^Folder \/tmp$/)));
      await expand(w, await w.reveal("Machines", w.row("Machines", /^Folder \/tmp\/ui$/)));
      await (await w.reveal("Machines", w.row("Machines", /^File \/tmp\/ui\/edit-me\.txt$/))).click();
      const editor = w.page.locator(".editor-instance .monaco-editor").first();
      await w.page.locator(".tabs-container .tab", { hasText: "edit-me.txt" }).waitFor({ state: "visible" });
      await editor.locator(".view-lines", { hasText: "first line" }).waitFor({ state: "visible" });
      await editor.click();
      await w.page.keyboard.press("Control+a");
      await w.page.keyboard.type(edited);
      const dirty = w.page.locator(".tabs-container .tab.dirty", { hasText: "edit-me.txt" });
      await dirty.waitFor({ state: "visible" });
      await w.page.keyboard.press("Control+s");
      // The marker goes when the provider's writeFile has returned (an error would keep it).
      await dirty.waitFor({ state: "detached", timeout: 60_000 });
      assert.equal(await controller!.sh(VM, "cat /tmp/ui/edit-me.txt"), edited);
    });
  });

  it("pauses and resumes from the context menu; the state icon follows", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    let runningIcon = "";
    await step("paused", async (w) => {
      runningIcon = await iconOf(machine("running"));
      await w.contextMenu(machine("running"), "Pause Machine");
      await machine("paused").waitFor({ state: "visible", timeout: 60_000 });
      assert.equal(cliState(home, broker!.url), "paused");
      const pausedIcon = await iconOf(machine("paused"));
      assert.notEqual(pausedIcon, runningIcon, "the state icon changed");
      assert.match(pausedIcon, /machine-paused/);
    });
    await step("resumed", async (w) => {
      await w.contextMenu(machine("paused"), "Resume Machine");
      await machine("running").waitFor({ state: "visible", timeout: 60_000 });
      assert.equal(cliState(home, broker!.url), "running");
      assert.equal(await iconOf(machine("running")), runningIcon);
      assert.equal((await controller!.sh(VM, "echo alive")).trim(), "alive");
    });
  });

  it("takes a snapshot from the context menu and lists it", async (t) => {
    if (!requireComponent(t, "qemu, code-server and chromium", ready)) return;
    await step("snapshot-listed", async (w) => {
      // The guest's file tree from the steps above fills the small pane: fold it first.
      const pane = await w.view("Machines");
      await pane.locator(":scope > .pane-header").hover();
      await pane.locator(":scope > .pane-header .actions").getByRole("button", { name: /^Collapse All/ }).click();
      await w.contextMenu(machine("running"), "Take Snapshot…");
      await w.quickInput("ui-snap");
      await expand(w, machine("running"));
      await expand(w, await w.reveal("Machines", w.row("Machines", /^Snapshots/)));
      await w.reveal("Machines", w.row("Machines", new RegExp(`^Snapshot ui-snap of ${VM}$`)), 120_000);
      assert.match(vmc(home, broker!.url, ["vm", "snapshots", VM]), /ui-snap/);
    });
  });
});

/** Expands a collapsed tree row (a click on its twistie) and waits until it says so. */
async function expand(w: Workbench, row: Locator): Promise<void> {
  await row.waitFor({ state: "visible", timeout: 60_000 });
  if ((await row.getAttribute("aria-expanded")) === "true") return;
  await row.locator(".monaco-tl-twistie").click();
  await row.and(w.page.locator('[aria-expanded="true"]')).waitFor({ state: "visible", timeout: 30_000 });
}
