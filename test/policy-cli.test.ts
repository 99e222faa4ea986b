/**
 * `zt policy …` end to end: the real CLI (bin/zt → dist) in a child process, on files the
 * test writes to a temporary directory. Exit codes and output are the contract.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");
const ZT = join(ROOT, "bin", "zt");
const SHARED = resolve(ROOT, "..", "shared", "cedar-conformance");

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-policy-cli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function zt(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [ZT, ...args], {
    cwd: dir,
    encoding: "utf8",
    env: { ...process.env, ZT_CONFIG: join(dir, "no-such-zt.yaml") },
    timeout: 120_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const GOOD = `@id("eng-get")
@reason("eng-can-read")
permit(principal in Group::"eng", action == Action::"GET", resource == App::"whoami")
when { context.mfa_age_seconds < 3600 && context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("mfa-fresh")
@step_up
@reason("mfa-too-old")
forbid(principal, action, resource) when { context.mfa_age_seconds > 7200 };
`;

const CONTEXT = {
  source_ip: "10.1.2.3",
  host: "whoami.example.test",
  path: "/",
  mfa_age_seconds: 60,
  time: "2026-01-05T09:00:00Z",
  network: "office",
  local_hour: 9,
  authenticated_by: "session",
  grants: [],
  breakglass: false,
  failed_attempts: 0,
  new_network: false,
};

describe("zt policy (CLI)", () => {
  it("validate: accepts a good directory and reports file:line for a bad one", () => {
    const good = join(dir, "good");
    mkdirSync(good);
    writeFileSync(join(good, "main.cedar"), GOOD);
    const ok = zt("policy", "validate", good);
    expect(ok.err).toBe("");
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/2 policies, 0 templates, 0 links: valid/);

    const bad = join(dir, "bad");
    mkdirSync(bad);
    writeFileSync(
      join(bad, "a.cedar"),
      GOOD + `\npermit(principal, action, resource is App) when { resource.nmae == "x" };\n`,
    );
    const r = zt("policy", "validate", bad);
    expect(r.code).toBe(65);
    expect(r.err).toMatch(/ZT_POLICY_INVALID: .*a\.cedar:11:\d+: .*nmae/);
    expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("fmt: --check fails on unformatted files; fmt rewrites them; comments survive", () => {
    const d = join(dir, "fmt");
    mkdirSync(d);
    const f = join(d, "x.cedar");
    writeFileSync(f, `// keep me\npermit(principal,action,resource)   when {context.a};\n`);
    expect(zt("policy", "fmt", "--check", d).code).toBe(1);
    expect(zt("policy", "fmt", d).code).toBe(0);
    const text = readFileSync(f, "utf8");
    expect(text).toContain("// keep me");
    expect(text).toContain("permit (principal, action, resource)");
    expect(zt("policy", "fmt", "--check", d).code).toBe(0);
  });

  it("test: runs YAML tests, prints N passed, N failed, exits non-zero on a failure", () => {
    const pol = join(dir, "tpol");
    mkdirSync(pol);
    writeFileSync(join(pol, "main.cedar"), GOOD);
    const entities = [
      { uid: { type: "Group", id: "eng" }, attrs: {}, parents: [] },
      {
        uid: { type: "User", id: "alice" },
        attrs: { name: "alice" },
        parents: [{ type: "Group", id: "eng" }],
      },
      { uid: { type: "User", id: "bob" }, attrs: { name: "bob" }, parents: [] },
      { uid: { type: "App", id: "whoami" }, attrs: { name: "whoami" }, parents: [] },
    ];
    writeFileSync(join(dir, "entities.json"), JSON.stringify(entities));
    const yaml = (extra: string) => `entities: entities.json
defaults:
  context: ${JSON.stringify(CONTEXT)}
tests:
  - name: engineers read
    principal: User::"alice"
    action: GET
    resource: App::"whoami"
    expect: allow
    reasons: [eng-get]
  - name: old MFA steps up
    principal: User::"alice"
    action: Action::"GET"
    resource: App::"whoami"
    context: { mfa_age_seconds: 9000 }
    expect: step-up
    reason: mfa-too-old
  - name: outsiders are denied
    principal: User::"bob"
    action: GET
    resource: App::"whoami"
    expect: deny
${extra}`;
    writeFileSync(join(dir, "ok.yaml"), yaml(""));
    const ok = zt("policy", "test", "--policies", pol, join(dir, "ok.yaml"));
    expect(ok.out.trim().split("\n").at(-1)).toBe("3 passed, 0 failed");
    expect(ok.code).toBe(0);

    writeFileSync(
      join(dir, "bad.yaml"),
      yaml(`  - name: wrong expectation
    principal: User::"bob"
    action: GET
    resource: App::"whoami"
    expect: allow
`),
    );
    const bad = zt("policy", "test", "--policies", pol, join(dir, "bad.yaml"));
    expect(bad.out).toMatch(/FAIL .*bad\.yaml: wrong expectation: expected allow, got deny/);
    expect(bad.out.trim().split("\n").at(-1)).toBe("3 passed, 1 failed");
    expect(bad.code).toBe(1);

    writeFileSync(join(dir, "broken.yaml"), "tests: [ { principal: 1 } ]\n");
    const broken = zt("policy", "test", "--policies", pol, join(dir, "broken.yaml"));
    expect(broken.code).toBe(65);
    expect(broken.err).toMatch(/broken\.yaml: tests\.0\./);
  });

  it("explain: names the condition that was false", () => {
    const pol = join(dir, "xpol");
    mkdirSync(pol);
    writeFileSync(join(pol, "main.cedar"), GOOD);
    writeFileSync(
      join(dir, "x-entities.json"),
      JSON.stringify([
        {
          uid: { type: "User", id: "alice" },
          attrs: { name: "alice" },
          parents: [{ type: "Group", id: "eng" }],
        },
      ]),
    );
    const r = zt(
      "policy",
      "explain",
      "--policies",
      pol,
      "--principal",
      'User::"alice"',
      "--action",
      "GET",
      "--resource",
      'App::"whoami"',
      "--entities",
      join(dir, "x-entities.json"),
      "--context",
      JSON.stringify({ ...CONTEXT, source_ip: "192.0.2.1" }),
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/decision: deny\s+verdict: deny\s+reason: no-matching-permit/);
    expect(r.out).toMatch(/no\s+permit\s+eng-get/);
    expect(r.out).toMatch(
      /when \{ context\.source_ip\.isInRange\(ip\("10\.0\.0\.0\/8"\)\) \} is false/,
    );
    expect(r.out).toMatch(/no\s+forbid\s+mfa-fresh/);
  });

  describe("explain: input Cedar has no type for", () => {
    const explain = (context: string, entities?: object[]) => {
      const pol = join(dir, "xpol-bad-input");
      mkdirSync(pol, { recursive: true });
      writeFileSync(join(pol, "main.cedar"), GOOD);
      const args = ["policy", "explain", "--policies", pol, "--principal", 'User::"alice"'];
      args.push("--action", "GET", "--resource", 'App::"whoami"', "--context", context);
      if (entities) {
        const file = join(dir, "bad-input-entities.json");
        writeFileSync(file, JSON.stringify(entities));
        args.push("--entities", file);
      }
      return zt(...args);
    };
    // The context as JSON text, with `extra` (raw JSON: numbers JSON.stringify cannot write).
    const withExtra = (extra: string, key = "extra") =>
      `${JSON.stringify(CONTEXT).slice(0, -1)},${JSON.stringify(key)}:${extra}}`;

    it("a --context number with a fraction, past a double or past signed 64 bits is ZT_POLICY_ENTITY_INVALID naming the key (was ZT_INTERNAL)", () => {
      for (const [value, why] of [
        ["1.5", /1\.5 is not an integer/],
        ["1e400", /too large/],
        ["9223372036854775808", /9223372036854775808 is out of range/],
        ["-9223372036854775809", /-9223372036854775809 is out of range/],
        ["99999999999999999999", /out of range/],
        ["1e19", /out of range/],
        ["null", /null is not a Cedar value/],
      ] as const) {
        const r = explain(withExtra(value));
        expect(r.err, value).toMatch(
          /^zt: error ZT_POLICY_ENTITY_INVALID: --context: attribute "extra": /,
        );
        expect(r.err, value).toMatch(why);
        expect(r.err.trim().split("\n"), value).toHaveLength(1);
        expect(r.code, value).toBe(65);
        expect(r.out).toBe("");
      }
    });

    it("names the place of a bad value inside a record or a set, and in an entity's attrs", () => {
      const nested = explain(withExtra('{"a": {"b": [1, 2.25]}}'));
      expect(nested.err).toMatch(
        /^zt: error ZT_POLICY_ENTITY_INVALID: --context: attribute "extra"\."a"\."b"\[1\]: 2\.25 is not an integer/,
      );
      expect(nested.code).toBe(65);
      const entity = explain(JSON.stringify(CONTEXT), [
        { uid: { type: "User", id: "alice" }, attrs: { name: "alice", age: 1.5 }, parents: [] },
      ]);
      expect(entity.err).toMatch(
        /^zt: error ZT_POLICY_ENTITY_INVALID: --entities: User::"alice" attrs: attribute "age": 1\.5/,
      );
      expect(entity.code).toBe(65);
    });

    it("__proto__ and constructor are ordinary attribute names in --context and --entities (was ZT_INTERNAL; an entity's __proto__ was lost)", () => {
      for (const key of ["__proto__", "constructor"]) {
        const r = explain(withExtra('{"x": 1}', key), [
          { uid: { type: "User", id: "alice" }, attrs: JSON.parse(`{"${key}": 5}`), parents: [] },
        ]);
        // zt's schema does not declare them: refused by name like any undeclared attribute.
        expect(r.err, key).toBe(
          `zt: error ZT_POLICY_ENTITY_INVALID: --context: record attribute \`${key}\` should not exist according to the schema\n`,
        );
        expect(r.code, key).toBe(65);
      }
      // With a schema that declares them, policies read them like any other attribute.
      const pol = join(dir, "xpol-odd-names");
      mkdirSync(pol, { recursive: true });
      writeFileSync(
        join(pol, "schema.cedarschema"),
        `entity User { "__proto__"?: Long };
entity App;
action GET appliesTo { principal: User, resource: App, context: { "__proto__": Long, "constructor": Long } };
`,
      );
      writeFileSync(
        join(pol, "main.cedar"),
        `@id("odd-names")
permit(principal, action == Action::"GET", resource)
when { context["__proto__"] == 7 && context["constructor"] == 8 && principal has "__proto__" && principal["__proto__"] == 9 };
`,
      );
      const entities = join(dir, "odd-names-entities.json");
      writeFileSync(
        entities,
        '[{"uid": {"type": "User", "id": "a"}, "attrs": {"__proto__": 9}, "parents": []}]',
      );
      const run = (context: string) =>
        zt(
          ...["policy", "explain", "--policies", pol, "--principal", 'User::"a"'],
          ...["--action", "GET", "--resource", 'App::"x"', "--entities", entities],
          ...["--context", context],
        );
      const allowed = run('{"__proto__": 7, "constructor": 8}');
      expect(allowed.err).toBe("");
      expect(allowed.out).toMatch(/^decision: allow/);
      const denied = run('{"__proto__": 7, "constructor": 9}');
      expect(denied.err).toBe("");
      expect(denied.out).toMatch(/^decision: deny/);
      expect(denied.out).toMatch(/context\.constructor == 8 \} is false/);
    });
  });

  describe("a context that does not fit the schema is refused, not evaluated", () => {
    const pol = () => {
      const p = join(dir, "ctx-pol");
      mkdirSync(p, { recursive: true });
      writeFileSync(join(p, "main.cedar"), GOOD);
      return p;
    };
    const testFile = (context: object, expect = "deny") => {
      const f = join(dir, "ctx-test.yaml");
      writeFileSync(
        f,
        `entities: []
defaults:
  context: ${JSON.stringify(CONTEXT)}
tests:
  - name: outsiders are denied
    principal: User::"bob"
    action: GET
    resource: App::"whoami"
    context: ${JSON.stringify(context)}
    expect: ${expect}
`,
      );
      return zt("policy", "test", "--policies", pol(), f);
    };

    it("policy test: a bad value or a misspelt attribute fails the run with exit 65 naming the test and the attribute (a test expecting deny used to pass: the bad value was a policy error, and an error denies)", () => {
      const cases: [object, RegExp][] = [
        [
          { source_ip: "not-an-ip" },
          /ctx-test\.yaml: outsiders are denied: context: attribute "source_ip": .*invalid IP address: not-an-ip/,
        ],
        [
          { mfa_age_seconds: "sixty" },
          /context: attribute "mfa_age_seconds": "sixty" is not a Long/,
        ],
        [{ grants: [1] }, /context: attribute "grants": \[1\] is not a Set<String>/],
        [{ mfa_age_secs: 60 }, /context: record attribute `mfa_age_secs` should not exist/],
      ];
      for (const [context, message] of cases) {
        const r = testFile(context);
        expect(r.err, JSON.stringify(context)).toMatch(/^zt: error ZT_POLICY_ENTITY_INVALID: /);
        expect(r.err, JSON.stringify(context)).toMatch(message);
        expect(r.code, JSON.stringify(context)).toBe(65);
        expect(r.out).not.toMatch(/passed/);
      }
      const good = testFile({ source_ip: "10.9.9.9", mfa_age_seconds: 5 });
      expect(good.err).toBe("");
      expect(good.out.trim()).toBe("1 passed, 0 failed");
      expect(good.code).toBe(0);
    });

    it("explain: a bad --context value is ZT_POLICY_ENTITY_INVALID, exit 65 (was ZT_INTERNAL, exit 70); a partial context is still explained", () => {
      const run = (action: string, context: string) =>
        zt(
          ...["policy", "explain", "--policies", pol(), "--principal", 'User::"alice"'],
          ...["--action", action, "--resource", 'App::"whoami"', "--context", context],
        );
      const bad = run("GET", '{"source_ip": "not-an-ip"}');
      expect(bad.err).toMatch(
        /^zt: error ZT_POLICY_ENTITY_INVALID: --context: attribute "source_ip": .*invalid IP address: not-an-ip/,
      );
      expect(bad.code).toBe(65);
      // An action the schema does not declare: no type to check against, and still no ZT_INTERNAL.
      const undeclared = run("frobnicate", '{"a": {"__extn": {"fn": "ip", "arg": "bad"}}}');
      expect(undeclared.err).toMatch(
        /^zt: error ZT_POLICY_ENTITY_INVALID: context: .*invalid IP address: bad/,
      );
      expect(undeclared.code).toBe(65);
      const partial = run("GET", '{"source_ip": "10.0.0.1", "mfa_age_seconds": 5}');
      expect(partial.err).toBe("");
      expect(partial.code).toBe(0);
      expect(partial.out).toMatch(/^decision: deny/);
    });
  });

  it("conformance: a passing case exits 0; a wrong expectation is printed and exits non-zero", () => {
    const root = join(dir, "conf");
    mkdirSync(join(root, "t"), { recursive: true });
    writeFileSync(
      join(root, "t", "p.cedar"),
      `permit(principal == User::"a", action, resource);\nforbid(principal, action, resource) when { principal.age + 1 > 9223372036854775806 };`,
    );
    writeFileSync(
      join(root, "t", "e.json"),
      `[{"uid":{"type":"User","id":"a"},"attrs":{"age":9223372036854775807},"parents":[]}]`,
    );
    const req = (decision: string, reason: string[], errors: string[]) => ({
      description: "r",
      principal: { type: "User", id: "a" },
      action: { type: "Action", id: "view" },
      resource: { type: "Photo", id: "p" },
      context: {},
      decision,
      reason,
      errors,
    });
    const kase = (r: object) =>
      JSON.stringify({ policies: "t/p.cedar", entities: "t/e.json", requests: [r] });
    writeFileSync(join(root, "t", "1.json"), kase(req("allow", ["policy0"], ["policy1"])));
    const ok = zt("policy", "conformance", root);
    expect(ok.out.trim().split("\n").at(-1)).toBe("1 passed, 0 failed");
    expect(ok.code).toBe(0);
    writeFileSync(join(root, "t", "2.json"), kase(req("deny", ["policy1"], [])));
    const bad = zt("policy", "conformance", root);
    expect(bad.out).toMatch(
      /FAIL t\/2\.json: r: expected deny reason=\[policy1\] errors=\[\], got allow/,
    );
    expect(bad.out.trim().split("\n").at(-1)).toBe("1 passed, 1 failed");
    expect(bad.code).toBe(1);
  });

  it.skipIf(!existsSync(join(SHARED, "tests")))(
    "conformance: the hand-written Cedar integration tests pass",
    () => {
      const r = zt("policy", "conformance", SHARED);
      expect(r.out.trim().split("\n").at(-1)).toMatch(/^\d+ passed, 0 failed$/);
      expect(r.code).toBe(0);
    },
  );
});
