import { createHash } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import * as cedar from "./cedar-wasm.js";
import type { DetailedError, PolicyJson, SchemaJson } from "@cedar-policy/cedar-wasm/nodejs";
import { ZtError } from "../core/errors.js";
import { readInputFile } from "../core/read-input-file.js";
import { byteToCharOffset, lineColAt, splitPolicyText } from "./policy-splitter.js";
import type { LoadedPolicy, LoadedPolicySet, TemplateLinkSpec } from "./types.js";
import { ZT_SCHEMA } from "./zt-schema.js";

/** One source of policy text: a file name (for messages and default ids) and its text. */
export interface PolicySource {
  file: string;
  text: string;
}

export interface ParsePoliciesOptions {
  /**
   * Cedar schema text (or JSON) to validate against in strict mode; `null` skips validation.
   * Default: zt's schema.
   */
  schema?: string | SchemaJson<string> | null;
  /** Name of the schema file, for error positions. */
  schemaFile?: string;
  templateLinks?: TemplateLinkSpec[];
  /**
   * Policy ids: "file" (default) → the `@id` annotation, else `<file-basename>:<index>`;
   * "cedar" → `policy0`, `policy1` … in order, as Cedar names the policies of one text.
   */
  ids?: "file" | "cedar";
}

export interface LoadPolicySetOptions {
  /** "zt" (zt's schema), "none" (no validation), or a path to a `.cedarschema` file. */
  schema?: "zt" | "none" | (string & {});
}

interface Located {
  policy: LoadedPolicy;
  source: string;
  /** UTF-16 offset of the statement inside its source. */
  start: number;
}

/** A stable kebab-case decision reason (`mfa-too-old`). */
const REASON_RE = /^(?=.{1,100}$)[a-z0-9]+(?:-[a-z0-9]+)*$/;

function fail(message: string, context: Record<string, unknown> = {}): never {
  throw new ZtError("ZT_POLICY_INVALID", message, context);
}

function describeError(e: DetailedError): string {
  const labels = (e.sourceLocations ?? [])
    .map((l) => l.label)
    .filter((l): l is string => !!l && l.length > 0);
  return labels.length > 0 ? `${e.message}: ${labels.join("; ")}` : e.message;
}

/** file:line:col of a Cedar error whose byte offsets are relative to `text`, which sits at `start` in `source`. */
function position(
  file: string,
  source: string,
  start: number,
  text: string,
  e: DetailedError,
): string {
  const loc = e.sourceLocations?.[0];
  const off = start + (loc ? byteToCharOffset(text, loc.start) : 0);
  const { line, col } = lineColAt(source, off);
  return `${file}:${line}:${col}`;
}

function normaliseAnnotations(a: PolicyJson["annotations"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a ?? {})) out[k] = v ?? "";
  return out;
}

/**
 * Parses and validates Cedar policy text from one or more sources. All or nothing:
 * any parse or validation error throws `ZT_POLICY_INVALID` with `file:line:col`.
 */
export function parsePolicies(
  sources: PolicySource[],
  options: ParsePoliciesOptions = {},
): LoadedPolicySet {
  const located: Located[] = [];
  const ids = new Set<string>();
  let counter = 0;
  for (const src of sources) {
    const fileBase = basename(src.file).replace(/\.cedar$/, "");
    let index = 0;
    for (const stmt of splitPolicyText(src.text)) {
      const parts = cedar.policySetTextToParts(stmt.text);
      if (parts.type === "failure") {
        const e = parts.errors[0];
        if (!e) fail(`${src.file}: invalid policy`);
        fail(`${position(src.file, src.text, stmt.start, stmt.text, e)}: ${describeError(e)}`);
      }
      const isTemplate = parts.policy_templates.length > 0;
      const json = isTemplate ? cedar.templateToJson(stmt.text) : cedar.policyToJson(stmt.text);
      if (json.type === "failure") {
        const e = json.errors[0];
        if (!e) fail(`${src.file}: invalid policy`);
        fail(`${position(src.file, src.text, stmt.start, stmt.text, e)}: ${describeError(e)}`);
      }
      const annotations = normaliseAnnotations(json.json.annotations);
      const { line, col } = lineColAt(src.text, stmt.firstToken);
      const reason = annotations["reason"];
      // The reason goes unchanged into the audit record, the 403 page and forward-auth's
      // X-Zt-Reason header (where a newline or a non-Latin-1 character made it answer 500).
      if (reason !== undefined && !REASON_RE.test(reason))
        fail(
          `${src.file}:${line}:${col}: @reason(${JSON.stringify(reason)}): expected a kebab-case reason (a-z, 0-9 and single "-", at most 100 characters)`,
        );
      const id =
        annotations["id"] ??
        (options.ids === "cedar" ? `policy${counter}` : `${fileBase}:${index}`);
      if (ids.has(id)) fail(`${src.file}:${line}:${col}: duplicate policy id "${id}"`);
      ids.add(id);
      located.push({
        policy: {
          id,
          kind: isTemplate ? "template" : "static",
          effect: json.json.effect,
          json: json.json,
          text: stmt.text.slice(stmt.firstToken - stmt.start),
          annotations,
          file: src.file,
          line,
        },
        source: src.text,
        start: stmt.firstToken,
      });
      index++;
      counter++;
    }
  }

  const templateLinks = options.templateLinks ?? [];
  const templates = new Map(
    located.filter((l) => l.policy.kind === "template").map((l) => [l.policy.id, l.policy]),
  );
  for (const link of templateLinks) {
    if (!templates.has(link.templateId))
      fail(`template link "${link.newId}": no template "${link.templateId}"`);
    if (ids.has(link.newId)) fail(`template link "${link.newId}": duplicate policy id`);
    ids.add(link.newId);
  }

  const schema = options.schema === undefined ? ZT_SCHEMA : options.schema;
  let schemaJson: SchemaJson<string> | undefined;
  if (schema !== null) {
    schemaJson = parseSchema(schema, options.schemaFile ?? "schema.cedarschema");
    validatePolicies(located, schemaJson, templateLinks);
  }

  const hash = createHash("sha256");
  for (const l of located) hash.update(`${l.policy.id}\0${l.policy.text}\0`);
  for (const link of templateLinks) hash.update(JSON.stringify(link));
  if (schemaJson) hash.update(JSON.stringify(schemaJson));
  return {
    policies: located.map((l) => l.policy),
    templateLinks,
    schema: schemaJson,
    version: hash.digest("hex").slice(0, 16),
  };
}

/** Parses a Cedar schema (text or JSON); errors carry file:line:col. */
export function parseSchema(
  schema: string | SchemaJson<string>,
  file = "schema",
): SchemaJson<string> {
  if (typeof schema !== "string") {
    const ok = cedar.checkParseSchema(schema);
    if (ok.type === "failure") fail(`${file}: ${ok.errors.map(describeError).join("; ")}`);
    return schema;
  }
  const res = cedar.schemaToJson(schema);
  if (res.type === "failure") {
    const e = res.errors[0];
    if (!e) fail(`${file}: invalid schema`);
    fail(`${position(file, schema, 0, schema, e)}: ${describeError(e)}`);
  }
  return res.json;
}

function validatePolicies(
  located: Located[],
  schema: SchemaJson<string>,
  templateLinks: TemplateLinkSpec[],
): void {
  const staticPolicies: Record<string, string> = {};
  const templates: Record<string, string> = {};
  for (const l of located) {
    if (l.policy.kind === "template") templates[l.policy.id] = l.policy.text;
    else staticPolicies[l.policy.id] = l.policy.text;
  }
  const res = cedar.validate({
    schema,
    policies: {
      staticPolicies,
      templates,
      templateLinks: templateLinks.map((t) => ({
        templateId: t.templateId,
        newId: t.newId,
        values: t.values,
      })),
    },
    validationSettings: { mode: "strict" },
  });
  if (res.type === "failure")
    fail(`policy validation failed: ${res.errors.map(describeError).join("; ")}`);
  if (res.validationErrors.length === 0) return;
  const byId = new Map(located.map((l) => [l.policy.id, l]));
  const messages = res.validationErrors.map((v) => {
    const l = byId.get(v.policyId);
    if (!l) return { order: Infinity, text: `${v.policyId}: ${describeError(v.error)}` };
    const pos = position(l.policy.file ?? "", l.source, l.start, l.policy.text, v.error);
    return { order: located.indexOf(l), text: `${pos}: ${describeError(v.error)}` };
  });
  messages.sort((a, b) => a.order - b.order);
  fail(messages[0]!.text, { errors: messages.map((m) => m.text) });
}

/**
 * Loads every `*.cedar` file in `dir` (sorted by name), validated against the schema:
 * `schema.cedarschema` in the directory when present, else zt's own (`options.schema`
 * overrides). Template links come from `links.json` when present. Throws
 * `ZT_POLICY_INVALID` with `file:line:col` on any error; never returns a partial set.
 */
export function loadPolicySet(dir: string, options: LoadPolicySetOptions = {}): LoadedPolicySet {
  if (!existsSync(dir)) fail(`policy directory not found: ${dir}`);
  if (!statSync(dir).isDirectory()) fail(`policy directory ${dir} is not a directory`);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".cedar"))
    .sort();
  const sources = files.map((f) => ({
    file: join(dir, f),
    text: readInputFile(join(dir, f)),
  }));

  let schema: string | null = ZT_SCHEMA;
  let schemaFile = "zt-schema";
  const dirSchema = join(dir, "schema.cedarschema");
  if (options.schema === "none") schema = null;
  else if (options.schema === "zt") schema = ZT_SCHEMA;
  else if (options.schema !== undefined) {
    if (!existsSync(options.schema)) fail(`schema file not found: ${options.schema}`);
    schema = readInputFile(options.schema);
    schemaFile = options.schema;
  } else if (existsSync(dirSchema)) {
    schema = readInputFile(dirSchema);
    schemaFile = dirSchema;
  }

  const linksFile = join(dir, "links.json");
  let templateLinks: TemplateLinkSpec[] = [];
  if (existsSync(linksFile)) templateLinks = parseLinks(linksFile, readInputFile(linksFile));

  return parsePolicies(sources, { schema, schemaFile, templateLinks });
}

function parseLinks(file: string, text: string): TemplateLinkSpec[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(raw)) fail(`${file}: expected an array of template links`);
  return raw.map((item: unknown, i) => {
    const o = item as Record<string, unknown>;
    if (typeof o?.["templateId"] !== "string" || typeof o["newId"] !== "string")
      fail(`${file}: [${i}]: expected { templateId: string, newId: string, values: {…} }`);
    const values: Record<string, { type: string; id: string }> = {};
    for (const [slot, v] of Object.entries((o["values"] ?? {}) as Record<string, unknown>)) {
      const u = v as Record<string, unknown>;
      const uid = (u?.["__entity"] ?? u) as Record<string, unknown>;
      if (typeof uid?.["type"] !== "string" || typeof uid["id"] !== "string")
        fail(`${file}: [${i}].values.${slot}: expected { type, id }`);
      values[slot] = { type: uid["type"] as string, id: uid["id"] as string };
    }
    return { templateId: o["templateId"] as string, newId: o["newId"] as string, values };
  });
}
