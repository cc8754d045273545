/**
 * Broker users. With a users file (`--users FILE`, else `<data>/users.json`), only its
 * login/passcode pairs are accepted:
 *   { "users": [ { "login": "alice", "passcode": "s3cret" } ] }
 * With no file, RabbitMQ's default applies: `guest`/`guest`, and only from a loopback address.
 */
import { existsSync, readFileSync } from "node:fs";
import { timingSafeEqual, createHash } from "node:crypto";

export interface UserTable {
  /** Null: no config, guest from loopback only. */
  users: Map<string, string> | null;
}

export function loadUsers(file: string | undefined): UserTable {
  if (!file || !existsSync(file)) return { users: null };
  const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
  const list = (parsed as { users?: unknown }).users;
  if (!Array.isArray(list)) throw new Error(`${file}: expected {"users": [{"login": ..., "passcode": ...}]}`);
  const users = new Map<string, string>();
  for (const u of list as unknown[]) {
    const { login, passcode } = (u ?? {}) as { login?: unknown; passcode?: unknown };
    if (typeof login !== "string" || typeof passcode !== "string") throw new Error(`${file}: each user needs string login and passcode`);
    users.set(login, passcode);
  }
  return { users };
}

function same(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127.");
}

/** Undefined when accepted, else the reason (RabbitMQ's wording). */
export function authenticate(table: UserTable, login: string | undefined, passcode: string | undefined, remote: string | undefined): string | undefined {
  // Unlike RabbitMQ's `default_user`, a CONNECT without credentials is refused: every client
  // here names its user (the bus client sends guest/guest when the broker URL has none).
  if (login === undefined) return "Access refused: CONNECT needs a login and passcode";
  const user = login;
  const pass = passcode ?? "";
  if (table.users === null) {
    if (user !== "guest" || !same(pass, "guest")) return `Access refused for user '${user}'`;
    if (!isLoopback(remote)) return `user '${user}' can only connect via localhost`;
    return undefined;
  }
  const expected = table.users.get(user);
  if (expected === undefined || !same(pass, expected)) return `Access refused for user '${user}'`;
  return undefined;
}
