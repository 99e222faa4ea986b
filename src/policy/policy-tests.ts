import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { isZtError, ZtError } from "../core/errors.js";
import { readInputFile } from "../core/read-input-file.js";
import { EntityStore } from "./entity-store.js";
import { parseJsonExact } from "./json-bigint.js";
import {
  assertContextTypes,
  canonicalContext,
  canonicalEntities,
  schemaModel,
  type SchemaModel,
} from "./schema-values.js";
import type {
  AuthorizationRequest,
  AuthorizationResult,
  EntityUid,
  LoadedPolicySet,
  PolicyEngine,
} from "./types.js";

/**
 * Policy tests (the `opa test` habit): YAML files listing requests and the verdict each
 * must get. With a schema (zt's by default), context and entity values may be written
 * without Cedar's JSON escapes: `source_ip: "10.0.0.1"`, `time: "2026-01-05T09:00:00Z"`.
 *
 * ```yaml
 * entities: entities.json          # or an inline list of Cedar JSON entities
 * defaults:
 *   context: { source_ip: "10.0.0.1", host: "whoami.example.test", … }
 * tests:
 *   - name: engineers may read
 *     principal: User::"alice"
 *     action: Action::"GET"
 *     resource: App::"whoami"
 *     context: { mfa_age_seconds: 60 }
 *     expect: allow                 # allow | deny | step-up
 *     reasons: [eng-get]            # optional: the determining policy ids
 * ```
 */
export interface PolicyTestOutcome {
  file: string;
  name: string;
  ok: boolean;
  expected: string;
  actual: string;
  message?: string;
  result?: AuthorizationResult;
}

const uidSchema = z.union([z.string(), z.object({ type: z.string(), id: z.string() })]);

const testSchema = z.object({
  name: z.string().optional(),
  principal: uidSchema,
  action: uidSchema,
  resource: uidSchema,
  context: z.record(z.string(), z.unknown()).optional(),
  entities: z.array(z.unknown()).optional(),
  expect: z.enum(["allow", "deny", "step-up"]),
  reasons: z.array(z.string()).optional(),
  reason: z.string().optional(),
});

const fileSchema = z.object({
  entities: z.union([z.string(), z.array(z.unknown())]).optional(),
  defaults: z.object({ context: z.record(z.string(), z.unknown()).optional() }).optional(),
  tests: z.array(testSchema).min(1),
});

/** Parses `Type::"id"` (or `{type, id}`); a bare word is taken as an action id. */
export function parseUid(v: string | { type: string; id: string }, bareType?: string): EntityUid {
  if (typeof v !== "string") return v;
  const m = /^(.+)::"((?:[^"\\]|\\.)*)"$/.exec(v);
  if (m) return { type: m[1]!, id: JSON.parse(`"${m[2]!}"`) as string };
  if (bareType && /^[^:"\s]+$/.test(v)) return { type: bareType, id: v };
  throw new ZtError("ZT_POLICY_INVALID", `invalid entity uid "${v}": expected Type::"id"`);
}

function fail(file: string, message: string): never {
  throw new ZtError("ZT_POLICY_INVALID", `${file}: ${message}`);
}

/** A test or entities file's text; a directory, a device or an unreadable file fails naming it. */
function readTestFile(file: string, shown: string): string {
  try {
    return readInputFile(file);
  } catch (e) {
    if (isZtError(e)) fail(shown, e.message.replace(`${file}: `, ""));
    fail(shown, `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

/** Runs every test in `files` against `engine`; never throws for a failing test, only for a bad file. */
export function runPolicyTests(engine: PolicyEngine, files: string[]): PolicyTestOutcome[] {
  const set: LoadedPolicySet = engine.policySet;
  const model: SchemaModel | undefined = set.schema ? schemaModel(set.schema) : undefined;
  const out: PolicyTestOutcome[] = [];
  for (const file of files) {
    if (!existsSync(file)) fail(file, "file not found");
    const text = readTestFile(file, file);
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      fail(file, `invalid YAML: ${(e as Error).message}`);
    }
    const parsed = fileSchema.safeParse(doc);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      fail(file, `${issue.path.join(".") || "(root)"}: ${issue.message}`);
    }
    const spec = parsed.data;
    let baseEntities: unknown[] = [];
    if (typeof spec.entities === "string") {
      const p = resolve(dirname(file), spec.entities);
      if (!existsSync(p)) fail(file, `entities file not found: ${spec.entities}`);
      const raw = parseJsonExact(readTestFile(p, file));
      if (!Array.isArray(raw)) fail(file, `entities: ${spec.entities} is not a JSON array`);
      baseEntities = raw;
    } else if (spec.entities) baseEntities = spec.entities;

    spec.tests.forEach((t, i) => {
      const name = t.name ?? `test ${i + 1}`;
      const request: AuthorizationRequest = {
        principal: parseUid(t.principal),
        action: parseUid(t.action, "Action"),
        resource: parseUid(t.resource),
        context: {},
      };
      const context = { ...(spec.defaults?.context ?? {}), ...(t.context ?? {}) };
      const canonical = canonicalContext(model, request.action, context);
      assertContextTypes(model, set.schema, request.action, canonical, `${file}: ${name}: context`);
      request.context = canonical as AuthorizationRequest["context"];
      const store = new EntityStore(
        canonicalEntities([...baseEntities, ...(t.entities ?? [])], model),
      );
      const result = engine.authorize(request, store);
      const problems: string[] = [];
      if (result.verdict !== t.expect) problems.push(`expected ${t.expect}, got ${result.verdict}`);
      if (t.reasons && [...t.reasons].sort().join(",") !== result.reasons.join(","))
        problems.push(
          `expected policies [${t.reasons.join(", ")}], got [${result.reasons.join(", ")}]`,
        );
      if (t.reason && t.reason !== result.reason)
        problems.push(`expected reason ${t.reason}, got ${result.reason}`);
      if (problems.length > 0 && result.errors.length > 0)
        problems.push(
          `errors: ${result.errors.map((e) => `${e.policyId}: ${e.message}`).join("; ")}`,
        );
      const outcome: PolicyTestOutcome = {
        file,
        name,
        ok: problems.length === 0,
        expected: t.expect,
        actual: result.verdict,
        result,
      };
      if (problems.length > 0) outcome.message = problems.join("; ");
      out.push(outcome);
    });
  }
  return out;
}

/**
 * Throws ZT_POLICY_TEST_FAILED unless every test passes: for loaders that must refuse a
 * policy set whose configured tests fail (`policy_tests` in zt.yaml).
 */
export function assertPolicyTests(engine: PolicyEngine, files: string[]): void {
  if (files.length === 0) return;
  const results = runPolicyTests(engine, files);
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) {
    const first = failed[0]!;
    throw new ZtError(
      "ZT_POLICY_TEST_FAILED",
      `${failed.length} policy test(s) failed; first: ${first.file}: ${first.name}: ${first.message ?? ""}`,
      { failed: failed.map((f) => `${f.file}: ${f.name}`) },
    );
  }
}
