import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { isZtError } from "../core/errors.js";
import { EntityStore } from "./entity-store.js";
import { parseJsonExact } from "./json-bigint.js";
import { parsePolicies } from "./policy-loader.js";
import {
  canonicalContext,
  canonicalEntities,
  schemaModel,
  type SchemaModel,
} from "./schema-values.js";
import type { AuthorizationRequest, EntityUid, PolicyEngine } from "./types.js";

/**
 * Runs test cases in the cedar-integration-tests layout: JSON files with `policies`,
 * `entities`, `schema` (paths relative to the root folder) and `requests[]` carrying the
 * expected `decision`, `reason` (determining policy ids) and `errors` (policy ids).
 */
export interface ConformanceResult {
  file: string;
  request: string;
  ok: boolean;
  expected?: { decision: string; reason: string[]; errors: string[] };
  actual?: { decision: string; reason: string[]; errors: string[] };
  /** Set when the case itself could not be run (bad file, policy parse failure …). */
  failure?: string;
}

export interface ConformanceOptions {
  engine: (set: ReturnType<typeof parsePolicies>) => PolicyEngine;
}

/** Every `*.json` test case under `root` (recursively), sorted. */
export function findConformanceCases(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (
        name.endsWith(".json") &&
        !name.endsWith(".entities.json") &&
        name !== "entities.json"
      )
        out.push(p);
    }
  };
  walk(root);
  return out;
}

interface CaseFile {
  policies: string;
  entities: string;
  schema?: string;
  requests: {
    description?: string;
    principal: EntityUid;
    action: EntityUid;
    resource: EntityUid;
    context?: Record<string, unknown>;
    decision: string;
    reason: string[];
    errors: string[];
  }[];
}

function isCaseFile(v: unknown): v is CaseFile {
  const o = v as Record<string, unknown>;
  return (
    !!o &&
    typeof o === "object" &&
    typeof o["policies"] === "string" &&
    typeof o["entities"] === "string" &&
    Array.isArray(o["requests"])
  );
}

const sorted = (a: string[]): string[] => [...a].sort();
const same = (a: string[], b: string[]): boolean =>
  a.length === b.length && sorted(a).every((x, i) => x === sorted(b)[i]);

/** Runs one case file; yields one result per request (or one failure for the file). */
export function runConformanceCase(
  root: string,
  file: string,
  options: ConformanceOptions,
): ConformanceResult[] {
  const name = relative(root, file);
  let data: unknown;
  try {
    data = parseJsonExact(readFileSync(file, "utf8"));
  } catch (e) {
    return [
      { file: name, request: "-", ok: false, failure: `cannot read: ${(e as Error).message}` },
    ];
  }
  if (!isCaseFile(data)) return [];
  let engine: PolicyEngine;
  let store: EntityStore;
  let model: SchemaModel | undefined;
  try {
    const text = readFileSync(join(root, data.policies), "utf8");
    const set = parsePolicies([{ file: data.policies, text }], { schema: null, ids: "cedar" });
    engine = options.engine(set);
    if (data.schema) model = schemaModel(readFileSync(join(root, data.schema), "utf8"));
    const rawEntities = parseJsonExact(readFileSync(join(root, data.entities), "utf8"));
    store = new EntityStore(canonicalEntities(rawEntities, model));
  } catch (e) {
    const msg = isZtError(e) ? e.message : (e as Error).message;
    return [{ file: name, request: "-", ok: false, failure: msg }];
  }
  return data.requests.map((r, i) => {
    const expected = {
      decision: r.decision,
      reason: sorted(r.reason ?? []),
      errors: sorted(r.errors ?? []),
    };
    const request: AuthorizationRequest = {
      principal: r.principal,
      action: r.action,
      resource: r.resource,
      context: canonicalContext(
        model,
        r.action,
        r.context ?? {},
      ) as AuthorizationRequest["context"],
    };
    const res = engine.authorize(request, store);
    const actual = {
      decision: res.decision,
      reason: sorted(res.reasons),
      errors: sorted([...new Set(res.errors.map((e) => e.policyId))]),
    };
    const ok =
      actual.decision === expected.decision &&
      same(actual.reason, expected.reason) &&
      same(actual.errors, expected.errors);
    return { file: name, request: r.description ?? `request ${i}`, ok, expected, actual };
  });
}
