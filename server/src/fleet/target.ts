/**
 * Target expressions: which agents a command is for.
 *
 * ```
 * target   := term ( "," term )*          union of the terms
 * term     := clause ( "&" clause )*      every clause must hold
 * clause   := glob                        on the dotted agent id
 *           | key "=" valueGlob           label equals (value may use * and ?)
 *           | key "!=" valueGlob          label absent or different
 * ```
 * Globs on ids work segment-wise, so a pattern never reaches deeper than it says:
 * - `*` matches any characters within ONE segment (never a dot): `vm.1.2.*` matches
 *   `vm.1.2.7` but not `vm.1.2.7.3`; `vm.*.7` matches `vm.1.7`; `vm.1*` matches `vm.10`;
 * - `**` matches any characters including dots (one or more segments when it is a segment):
 *   `vm.**` matches `vm.1` and `vm.1.2.7`, `**` matches every agent;
 * - `?` matches one character other than a dot.
 * (The 2010 controller used fnmatch, where `*` crossed dots, so `vm.1.*` also hit `vm.1.20.3`.)
 *
 * A term that is a plain id, with no wildcard and no label clause, is a **literal**: it names
 * that agent whether or not the registry knows it right now (see {@link expandTarget}).
 * @packageDocumentation
 */
import { AgentId } from "@vmc/protocol/bus";

export type Clause =
  | { kind: "id"; pattern: string; regex: RegExp; literal: boolean }
  | { kind: "label"; key: string; negate: boolean; pattern: string; regex: RegExp };

export interface Term {
  clauses: Clause[];
  /** The agent id when the term is one literal id clause. */
  literalId?: string;
}

export interface Target {
  /** The expression as written. */
  source: string;
  terms: Term[];
}

/** What a clause is matched against. */
export interface Matchable {
  agentId: string;
  labels: Readonly<Record<string, string>>;
}

export class TargetSyntaxError extends Error {
  constructor(source: string, reason: string) {
    super(`bad target '${source}': ${reason}`);
    this.name = "TargetSyntaxError";
  }
}

const ID_GLOB = /^[A-Za-z0-9_*?-]+(\.[A-Za-z0-9_*?-]+)*$/;
const LABEL_KEY = /^[A-Za-z0-9_.\/-]{1,64}$/;

/** Parses a target expression; throws {@link TargetSyntaxError} with the reason. */
export function parseTarget(source: string): Target {
  const text = source.trim();
  if (text === "") throw new TargetSyntaxError(source, "empty");
  if (text.length > 1024) throw new TargetSyntaxError(source, "longer than 1024 characters");
  const terms = text.split(",").map((raw) => parseTerm(source, raw.trim()));
  return { source: text, terms };
}

function parseTerm(source: string, raw: string): Term {
  if (raw === "") throw new TargetSyntaxError(source, "empty term (two commas, or a trailing comma)");
  const clauses = raw.split("&").map((c) => parseClause(source, c.trim()));
  const only = clauses.length === 1 ? clauses[0] : undefined;
  return only?.kind === "id" && only.literal ? { clauses, literalId: only.pattern } : { clauses };
}

function parseClause(source: string, raw: string): Clause {
  if (raw === "") throw new TargetSyntaxError(source, "empty clause around '&'");
  const eq = raw.indexOf("=");
  if (eq >= 0) {
    const negate = raw[eq - 1] === "!";
    const key = raw.slice(0, negate ? eq - 1 : eq).trim();
    const pattern = raw.slice(eq + 1).trim();
    if (!LABEL_KEY.test(key)) throw new TargetSyntaxError(source, `label key '${key}' must be 1-64 letters, digits, '.', '_', '-', '/'`);
    return { kind: "label", key, negate, pattern, regex: valueRegex(pattern) };
  }
  if (!ID_GLOB.test(raw)) throw new TargetSyntaxError(source, `'${raw}' is neither an agent id glob (dotted words, * ? **) nor a label clause (key=value)`);
  const literal = !/[*?]/.test(raw);
  if (literal && !AgentId.safeParse(raw).success) throw new TargetSyntaxError(source, `'${raw}' is not a valid agent id`);
  return { kind: "id", pattern: raw, regex: idRegex(raw), literal };
}

function escape(ch: string): string {
  return /[A-Za-z0-9_-]/.test(ch) ? ch : `\\${ch}`;
}

/** Id glob → anchored regex: `**` any characters, `*` no dot, `?` one non-dot. */
export function idRegex(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === "*" && glob[i + 1] === "*") {
      out += ".*";
      while (glob[i + 1] === "*") i++;
    } else if (ch === "*") out += "[^.]*";
    else if (ch === "?") out += "[^.]";
    else out += escape(ch);
  }
  return new RegExp(`^${out}$`);
}

/** Label value glob → anchored regex: `*` any characters, `?` one character. */
function valueRegex(glob: string): RegExp {
  let out = "";
  for (const ch of glob) out += ch === "*" ? ".*" : ch === "?" ? "." : escape(ch);
  return new RegExp(`^${out}$`, "s");
}

function clauseHolds(clause: Clause, agent: Matchable): boolean {
  if (clause.kind === "id") return clause.regex.test(agent.agentId);
  const value = Object.prototype.hasOwnProperty.call(agent.labels, clause.key) ? agent.labels[clause.key] : undefined;
  const hit = value !== undefined && clause.regex.test(value);
  return clause.negate ? !hit : hit;
}

/** True when the agent is one the target names. */
export function matchesTarget(target: Target, agent: Matchable): boolean {
  return target.terms.some((term) => term.clauses.every((c) => clauseHolds(c, agent)));
}

/** The literal ids a target names (agents addressed even when unknown). */
export function literalIds(target: Target): string[] {
  return [...new Set(target.terms.flatMap((t) => (t.literalId ? [t.literalId] : [])))];
}

/** True when expanding the target needs to know which agents exist (globs, labels). */
export function needsDiscovery(target: Target): boolean {
  return target.terms.some((t) => !t.literalId);
}

export interface Expansion {
  /** Every agent id the command goes to, sorted. */
  agentIds: string[];
  /** Subset of `agentIds` named literally but not known to the registry right now. */
  unknownLiterals: string[];
}

/**
 * Expands a target against the agents known right now. Known agents that match are included;
 * literal ids are always included, even when unknown — the command then waits in that agent's
 * durable inbox until it expires, and the target is reported unreachable if nothing answers.
 */
export function expandTarget(target: Target, known: Iterable<Matchable>): Expansion {
  const ids = new Set<string>();
  const knownIds = new Set<string>();
  for (const agent of known) {
    knownIds.add(agent.agentId);
    if (matchesTarget(target, agent)) ids.add(agent.agentId);
  }
  const unknownLiterals = literalIds(target).filter((id) => !knownIds.has(id));
  for (const id of unknownLiterals) ids.add(id);
  return { agentIds: [...ids].sort(), unknownLiterals: unknownLiterals.sort() };
}
