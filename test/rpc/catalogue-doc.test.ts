/**
 * The catalogue (protocol/src/rpc.ts, protocol/src/errors.ts), the handler table both endpoints
 * serve, and docs/PROTOCOL.md agree: every request in the catalogue is registered, every
 * registered method and every notification is documented with an example, and every error code is
 * in the Controller API's error table under its own name; the examples' requests pass the
 * catalogue's params schemas.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { NotificationType, RequestType } from "vscode-jsonrpc";
import * as catalogue from "@vmc/protocol/rpc";
import { Resources } from "@vmc/protocol/bus";
import { RpcErrorCodes, VmcErrorCodes } from "@vmc/protocol/errors";
import type { Controller } from "@vmc/server/controller/controller";
import { handlerTable } from "@vmc/server/rpc/handlers";

type Entry = { method: string; type: unknown; params?: { safeParse(p: unknown): { success: boolean; error?: unknown } } };
const entries = (Object.values(catalogue) as unknown[]).filter((v): v is Entry => typeof v === "object" && v !== null && typeof (v as { method?: unknown }).method === "string");
const requests = entries.filter((e) => e.type instanceof RequestType).map((e) => e.method);
const notifications = entries.filter((e) => e.type instanceof NotificationType).map((e) => e.method);

const doc = readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
const api = doc.slice(doc.indexOf("\n# Controller API"));
const section = (title: string): string => {
  const start = api.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `docs/PROTOCOL.md has "## ${title}" under "# Controller API"`);
  const end = api.indexOf("\n## ", start + 1);
  return api.slice(start, end < 0 ? undefined : end);
};
const backticked = (line: string) => [...line.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
/** Names in `### ...` headings, each heading with the text up to the next one. */
const methodSections = new Map<string, string>();
for (const part of section("Methods").split(/\n(?=### )/).filter((p) => p.startsWith("### "))) {
  for (const name of backticked(part.slice(0, part.indexOf("\n")))) methodSections.set(name, part);
}
const sentInExample = (method: string) => api.includes(`"method":"${method}"`);

test("the catalogue has requests and notifications (the check below reads it)", () => {
  assert.ok(requests.length >= 20, requests.join(" "));
  for (const n of ["vm.stateChanged", "agent.changed", "cmd.output", "cmd.finished", "$/progress"]) assert.ok(notifications.includes(n), n);
});

test("every request in the catalogue is registered on the endpoints, and nothing else is", () => {
  // The table is only read for its names here: no handler runs, so no controller is needed.
  const table = handlerTable({ guestFs: undefined } as unknown as Controller);
  assert.deepEqual([...table.keys()].sort(), [...requests].sort());
  for (const [method, handler] of table) assert.equal(handler.method, method);
});

test("docs/PROTOCOL.md documents every method: a heading, its params, its result, an example", () => {
  const undocumented = requests.filter((m) => !methodSections.has(m));
  assert.deepEqual(undocumented, [], "methods without a ### heading in ## Methods");
  assert.deepEqual([...methodSections.keys()].filter((m) => !requests.includes(m)), [], "headings for methods the catalogue does not have");
  for (const m of requests) {
    const text = methodSections.get(m)!;
    assert.match(text, /[Pp]arams/, `${m}: params`);
    assert.match(text, /[Rr]esults?:/, `${m}: result`);
  }
  assert.deepEqual(requests.filter((m) => !sentInExample(m)), [], "methods without a JSON example");
});

test("docs/PROTOCOL.md documents every notification with its params and an example", () => {
  const table = new Map(
    section("Notifications (server → client)")
      .split("\n")
      .filter((l) => l.startsWith("| `"))
      .map((l) => [backticked(l.split("|")[1]!)[0]!, l]),
  );
  assert.deepEqual(notifications.filter((n) => !table.has(n)), [], "notifications missing from the table");
  assert.deepEqual([...table.keys()].filter((n) => !notifications.includes(n)), [], "table rows the catalogue does not have");
  for (const [n, row] of table) assert.ok(row.split("|")[2]!.trim().length > 0, `${n}: params`);
  assert.deepEqual(notifications.filter((n) => !sentInExample(n)), [], "notifications without a JSON example");
  assert.match(section("Lifecycle"), /`\$\/cancelRequest/, "$/cancelRequest is documented");
});

test("docs/PROTOCOL.md's error table has every code under its name, and domain codes in the documented range", () => {
  const rows = section("Errors")
    .split("\n")
    .filter((l) => /^\| -\d+ \|/.test(l))
    .map((l) => l.split("|").map((c) => c.trim()));
  const documented = new Map(rows.map((r) => [Number(r[1]), r[2]]));
  for (const [name, code] of [...Object.entries(RpcErrorCodes), ...Object.entries(VmcErrorCodes)]) {
    assert.equal(documented.get(code), name, `code ${code} is documented as ${name}`);
  }
  assert.equal(documented.size, Object.keys(RpcErrorCodes).length + Object.keys(VmcErrorCodes).length, "no documented code the catalogue lacks");
  for (const code of Object.values(VmcErrorCodes)) assert.ok(code <= -33000 && code >= -33099, `${code} in the domain range -33000..-33099`);
});

test("docs/PROTOCOL.md's example requests pass the method's params schema; example resources are the bus's Resources", () => {
  const schemas = new Map(entries.filter((e) => e.params).map((e) => [e.method, e.params!]));
  let checked = 0;
  const lines = api.split("\n");
  lines.forEach((line, i) => {
    if (!line.startsWith("→ {")) return;
    const message = JSON.parse(line.slice(2)) as { id: number | string; method: string; params?: unknown };
    const schema = schemas.get(message.method);
    assert.ok(schema, `example of an unknown method: ${line}`);
    // An example of the InvalidParams answer shows params that fail on purpose.
    const answer = lines.slice(i + 1).find((l) => l.startsWith(`← {"jsonrpc":"2.0","id":${JSON.stringify(message.id)},`));
    const parsed = schema.safeParse(message.params);
    assert.equal(parsed.success, !answer?.includes(`"error":{"code":${RpcErrorCodes.InvalidParams}`), `${line}\n${String(parsed.error)}`);
    checked++;
  });
  assert.ok(checked >= requests.length, `${checked} example requests`);
  const resources = [...doc.matchAll(/"resources":(\{[^}]*\})/g)].map((m) => JSON.parse(m[1]!) as unknown);
  assert.ok(resources.length >= 2);
  for (const r of resources) assert.ok(Resources.strict().safeParse(r).success, JSON.stringify(r));
});
