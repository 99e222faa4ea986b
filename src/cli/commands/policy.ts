import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { isZtError, ZtError } from "../../core/errors.js";
import { readInputFile } from "../../core/read-input-file.js";
import { replaceFile } from "../../core/secure-files.js";
import {
  canonicalContext,
  canonicalEntities,
  createPolicyEngine,
  EntityStore,
  assertCedarJsonRecord,
  assertContextTypes,
  explainDecision,
  findConformanceCases,
  formatPolicyText,
  loadPolicySet,
  parseJsonExact,
  parseUid,
  runConformanceCase,
  runPolicyTests,
  schemaModel,
  type AuthorizationRequest,
  type ConformanceResult,
  type PolicyEngineKind,
} from "../../policy/index.js";
import { loadCliConfig, printJson, usageError, withoutContext } from "../cli-context.js";

/** The policy directory: --policies, else the config's `policies`, else ./policies. */
function policyDir(cmd: Command, given: string | undefined): string {
  if (given) return given;
  try {
    return loadCliConfig(cmd).policies;
  } catch (e) {
    if (isZtError(e) && e.code === "ZT_CONFIG_NOT_FOUND") return "./policies";
    throw e;
  }
}

function engineKind(v: string | undefined): PolicyEngineKind {
  if (v === undefined || v === "compiled" || v === "reference") return v ?? "compiled";
  throw usageError(`--engine: expected compiled or reference, got ${v}`);
}

function schemaOption(v: string | undefined): "zt" | "none" | string | undefined {
  return v;
}

/** *.cedar files named directly, or inside named directories (sorted). */
function cedarFiles(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) throw usageError(`not found: ${p}`);
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p).sort()) if (f.endsWith(".cedar")) out.push(join(p, f));
    } else out.push(p);
  }
  return out;
}

function readJsonArg(v: string, what: string): unknown {
  const text = v.startsWith("@") ? readInputFile(v.slice(1)) : v;
  try {
    return parseJsonExact(text);
  } catch (e) {
    throw usageError(`${what}: invalid JSON: ${(e as Error).message}`);
  }
}

/** Every entity's attrs and tags hold only values Cedar has a type for (see assertCedarJsonRecord). */
function assertEntityValues(raw: unknown): void {
  if (!Array.isArray(raw)) return; // canonicalEntities says what is wrong
  for (const item of raw as unknown[]) {
    if (!item || typeof item !== "object") continue;
    const e = item as { uid?: { type?: unknown; id?: unknown }; attrs?: unknown; tags?: unknown };
    const name =
      typeof e.uid?.type === "string" && typeof e.uid.id === "string"
        ? `${e.uid.type}::${JSON.stringify(e.uid.id)}`
        : "an entity";
    for (const part of ["attrs", "tags"] as const) {
      const rec = e[part];
      if (rec && typeof rec === "object" && !Array.isArray(rec))
        assertCedarJsonRecord(rec as Record<string, unknown>, `--entities: ${name} ${part}`);
    }
  }
}

export function registerPolicyCommands(program: Command): void {
  const policy = program
    .command("policy")
    .description("Cedar policies: validate, format, test, explain");

  policy
    .command("validate [dir]")
    .description("parse and validate a policy directory against the schema (file:line errors)")
    .option(
      "--schema <file>",
      'schema file, or "zt" / "none" (default: DIR/schema.cedarschema, else zt\'s)',
    )
    .option("--json", "JSON output")
    .action(
      async (dir: string | undefined, opts: { schema?: string; json?: boolean }, cmd: Command) =>
        withoutContext(async () => {
          const d = policyDir(cmd, dir);
          const schema = schemaOption(opts.schema);
          const set = loadPolicySet(d, schema === undefined ? {} : { schema });
          const summary = {
            ok: true,
            dir: d,
            version: set.version,
            policies: set.policies.filter((p) => p.kind === "static").length,
            templates: set.policies.filter((p) => p.kind === "template").length,
            links: set.templateLinks.length,
          };
          if (opts.json) printJson(summary);
          else
            process.stdout.write(
              `${d}: ${summary.policies} policies, ${summary.templates} templates, ${summary.links} links: valid (version ${set.version})\n`,
            );
        }),
    );

  policy
    .command("fmt [paths...]")
    .description("format *.cedar files in place (--check: only report files that would change)")
    .option("--check", "exit non-zero when a file is not formatted")
    .action(async (paths: string[], opts: { check?: boolean }, cmd: Command) =>
      withoutContext(async () => {
        const files = cedarFiles(paths.length > 0 ? paths : [policyDir(cmd, undefined)]);
        let unformatted = 0;
        for (const f of files) {
          const text = readInputFile(f);
          const formatted = formatPolicyText(text, f);
          if (formatted === text) continue;
          unformatted++;
          if (opts.check) process.stdout.write(`${f}: not formatted\n`);
          else {
            replaceFile(f, formatted); // a crash or a full disk mid-write keeps the old file
            process.stdout.write(`${f}: formatted\n`);
          }
        }
        return opts.check && unformatted > 0 ? 1 : 0;
      }),
    );

  policy
    .command("test [files...]")
    .description("run YAML policy tests; prints `N passed, N failed`")
    .option("--policies <dir>", "policy directory (default: the config's `policies`)")
    .option("--engine <kind>", "compiled | reference", "compiled")
    .option("--json", "one JSON result per test")
    .action(
      async (
        files: string[],
        opts: { policies?: string; engine?: string; json?: boolean },
        cmd: Command,
      ) =>
        withoutContext(async () => {
          let list = files;
          if (list.length === 0) {
            try {
              list = loadCliConfig(cmd).policy_tests;
            } catch {
              list = [];
            }
          }
          if (list.length === 0)
            throw usageError("no test files given (and no policy_tests in the config)");
          const engine = createPolicyEngine(
            engineKind(opts.engine),
            loadPolicySet(policyDir(cmd, opts.policies)),
          );
          const results = runPolicyTests(engine, list);
          let failed = 0;
          for (const r of results) {
            if (!r.ok) failed++;
            if (opts.json) {
              const { result, ...rest } = r;
              process.stdout.write(
                JSON.stringify({ ...rest, reasons: result?.reasons, reason: result?.reason }) +
                  "\n",
              );
            } else if (!r.ok)
              process.stdout.write(`FAIL ${r.file}: ${r.name}: ${r.message ?? ""}\n`);
          }
          process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
          return failed > 0 ? 1 : 0;
        }),
    );

  policy
    .command("explain")
    .description(
      "explain one decision: every policy, whether it applied, and which condition stopped it",
    )
    .requiredOption("--principal <uid>", 'e.g. User::"alice"')
    .requiredOption("--action <uid>", 'e.g. GET or Action::"GET"')
    .requiredOption("--resource <uid>", 'e.g. App::"whoami"')
    .option("--context <json>", "context record as JSON, or @file", "{}")
    .option("--entities <file>", "entities (Cedar JSON)")
    .option("--policies <dir>", "policy directory (default: the config's `policies`)")
    .option("--json", "JSON output")
    .action(
      async (
        opts: {
          principal: string;
          action: string;
          resource: string;
          context: string;
          entities?: string;
          policies?: string;
          json?: boolean;
        },
        cmd: Command,
      ) =>
        withoutContext(async () => {
          const set = loadPolicySet(policyDir(cmd, opts.policies));
          const model = set.schema ? schemaModel(set.schema) : undefined;
          const action = parseUid(opts.action, "Action");
          const ctx = readJsonArg(opts.context, "--context");
          if (!ctx || typeof ctx !== "object" || Array.isArray(ctx))
            throw usageError("--context: expected a JSON object");
          assertCedarJsonRecord(ctx as Record<string, unknown>, "--context");
          const context = canonicalContext(model, action, ctx as Record<string, unknown>);
          assertContextTypes(model, set.schema, action, context, "--context");
          const request: AuthorizationRequest = {
            principal: parseUid(opts.principal),
            action,
            resource: parseUid(opts.resource),
            context: context as AuthorizationRequest["context"],
          };
          const raw = opts.entities ? readJsonArg(`@${opts.entities}`, "--entities") : [];
          assertEntityValues(raw);
          const store = new EntityStore(canonicalEntities(raw, model));
          const ex = explainDecision(set, request, store);
          if (opts.json) {
            printJson(ex);
            return;
          }
          const r = ex.result;
          const w = (s: string) => process.stdout.write(s + "\n");
          w(`decision: ${r.decision}   verdict: ${r.verdict}   reason: ${r.reason}`);
          w(`determining: ${r.reasons.length > 0 ? r.reasons.join(", ") : "(none)"}`);
          for (const e of r.errors) w(`error: ${e.policyId}: ${e.message}`);
          w("");
          for (const p of ex.policies) {
            const where = p.file ? `  (${p.file}:${p.line ?? "?"})` : "";
            const mark =
              p.outcome === "satisfied" ? "applies" : p.outcome === "error" ? "ERROR" : "no";
            w(`${mark.padEnd(8)} ${p.effect.padEnd(7)} ${p.id}${where}`);
            if (p.outcome === "scope") {
              const miss = (["principal", "action", "resource"] as const).filter(
                (k) => !p.scope[k],
              );
              w(`         scope does not match: ${miss.join(", ")}`);
            } else if (p.failed) {
              const what = p.failed.part ?? p.failed.text;
              if (p.outcome === "error")
                w(`         ${p.failed.clause} { ${what} } raised: ${p.failed.error ?? ""}`);
              else
                w(
                  `         ${p.failed.clause} { ${what} } is ${p.failed.clause === "when" ? "false" : "true"}`,
                );
            }
          }
        }),
    );

  policy
    .command("conformance <dirs...>")
    .description(
      "run Cedar conformance cases (cedar-integration-tests layout); last line `N passed, N failed`",
    )
    .option(
      "--corpus <tar.gz>",
      "also unpack this corpus archive into a temporary directory and run it",
    )
    .option("--engine <kind>", "compiled | reference", "compiled")
    .option("--json", "one JSON result per request")
    .action(async (dirs: string[], opts: { corpus?: string; engine?: string; json?: boolean }) =>
      withoutContext(async () => {
        const kind = engineKind(opts.engine);
        const roots = [...dirs];
        let tmp: string | undefined;
        try {
          if (opts.corpus) {
            if (!existsSync(opts.corpus)) throw usageError(`--corpus: not found: ${opts.corpus}`);
            tmp = mkdtempSync(join(tmpdir(), "zt-conformance-"));
            const tar = spawnSync("tar", ["xzf", opts.corpus, "-C", tmp], { stdio: "inherit" });
            if (tar.status !== 0)
              throw new ZtError("ZT_BAD_REQUEST", `cannot unpack ${opts.corpus}`);
            roots.push(tmp);
          }
          let passed = 0;
          let failed = 0;
          for (const root of roots) {
            if (!existsSync(root) || !statSync(root).isDirectory())
              throw usageError(`not a directory: ${root}`);
            for (const file of findConformanceCases(root)) {
              for (const r of runConformanceCase(root, file, {
                engine: (s) => createPolicyEngine(kind, s),
              })) {
                if (r.ok) passed++;
                else failed++;
                if (opts.json) process.stdout.write(JSON.stringify(r) + "\n");
                else if (!r.ok) process.stdout.write(describeFailure(r) + "\n");
              }
            }
          }
          if (passed + failed === 0) process.stdout.write("no conformance cases found\n");
          process.stdout.write(`${passed} passed, ${failed} failed\n`);
          return failed > 0 || passed === 0 ? 1 : 0;
        } finally {
          if (tmp) rmSync(tmp, { recursive: true, force: true });
        }
      }),
    );
}

function describeFailure(r: ConformanceResult): string {
  if (r.failure) return `FAIL ${r.file}: ${r.failure}`;
  const fmt = (x: ConformanceResult["expected"]) =>
    x ? `${x.decision} reason=[${x.reason.join(",")}] errors=[${x.errors.join(",")}]` : "-";
  return `FAIL ${r.file}: ${r.request}: expected ${fmt(r.expected)}, got ${fmt(r.actual)}`;
}
