import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ZtError } from "../src/core/errors.js";
import {
  createPolicyEngine,
  EntityStore,
  httpContext,
  loadPolicySet,
  parsePolicies,
  type AuthorizationRequest,
  type CedarEntity,
  type PolicyEngineKind,
} from "../src/policy/index.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-policy-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function expectPolicyError(fn: () => unknown, pattern: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ZtError);
  expect((err as ZtError).code).toBe("ZT_POLICY_INVALID");
  expect((err as ZtError).message).toMatch(pattern);
}

const POLICIES = `// demo policies
@id("eng-get")
@reason("eng-can-read")
permit(principal in Group::"eng", action == Action::"GET", resource == App::"whoami");

@id("mfa-fresh")
@step_up
@reason("mfa-too-old")
forbid(principal, action, resource) when { context.mfa_age_seconds > 3600 };

@id("no-disabled")
@reason("user-disabled")
forbid(principal is User, action, resource) when { principal has disabled && principal.disabled };

permit(principal == User::"root", action, resource);
`;

function entities(): EntityStore {
  const list: CedarEntity[] = [
    { uid: { type: "Group", id: "staff" }, attrs: {}, parents: [] },
    { uid: { type: "Group", id: "eng" }, attrs: {}, parents: [{ type: "Group", id: "staff" }] },
    {
      uid: { type: "User", id: "alice" },
      attrs: { name: "alice" },
      parents: [{ type: "Group", id: "eng" }],
    },
    {
      uid: { type: "User", id: "bob" },
      attrs: { name: "bob" },
      parents: [{ type: "Group", id: "staff" }],
    },
    {
      uid: { type: "User", id: "carol" },
      attrs: { name: "carol", disabled: true },
      parents: [{ type: "Group", id: "eng" }],
    },
    { uid: { type: "App", id: "whoami" }, attrs: { name: "whoami" }, parents: [] },
  ];
  return new EntityStore(list);
}

function request(user: string, mfaAge = 60, method = "GET"): AuthorizationRequest {
  return {
    principal: { type: "User", id: user },
    action: { type: "Action", id: method },
    resource: { type: "App", id: "whoami" },
    context: httpContext({
      sourceIp: "10.1.2.3",
      host: "whoami.localhost",
      path: "/",
      mfaAgeSeconds: mfaAge,
      timeMs: Date.UTC(2026, 0, 1, 12),
      authenticatedBy: "session",
    }),
  };
}

describe("loadPolicySet", () => {
  it("loads *.cedar files sorted, with @id or file:index ids and line numbers", () => {
    writeFileSync(join(dir, "b.cedar"), POLICIES);
    writeFileSync(
      join(dir, "a.cedar"),
      `\n\npermit(principal, action == Action::"HEAD", resource);`,
    );
    writeFileSync(join(dir, "notes.txt"), "not a policy");
    const set = loadPolicySet(dir);
    expect(set.policies.map((p) => p.id)).toEqual([
      "a:0",
      "eng-get",
      "mfa-fresh",
      "no-disabled",
      "b:3",
    ]);
    expect(set.policies[0]!.line).toBe(3);
    expect(set.policies[1]!.line).toBe(2);
    expect(set.policies[2]!.annotations).toEqual({
      id: "mfa-fresh",
      step_up: "",
      reason: "mfa-too-old",
    });
    expect(set.policies[3]!.effect).toBe("forbid");
    expect(set.version).toMatch(/^[0-9a-f]{16}$/);
  });

  it("rejects a syntax error with file:line:col", () => {
    writeFileSync(join(dir, "ok.cedar"), `permit(principal, action, resource);`);
    writeFileSync(
      join(dir, "z.cedar"),
      `permit(principal, action, resource);\n\n// broken:\npermit(principal, action, resource) when { 1 + };\n`,
    );
    expectPolicyError(() => loadPolicySet(dir), /z\.cedar:4:\d+: .*unexpected token/);
  });

  it("rejects a policy the schema does not accept, naming file:line", () => {
    writeFileSync(
      join(dir, "p.cedar"),
      `permit(principal, action, resource);\npermit(principal, action, resource is App)\n  when { resource.nmae == "x" };`,
    );
    expectPolicyError(() => loadPolicySet(dir), /p\.cedar:3:\d+: .*attribute `nmae`/);
  });

  it("rejects unguarded optional attributes (strict validation)", () => {
    writeFileSync(
      join(dir, "p.cedar"),
      `permit(principal, action == Action::"GET", resource) when { context.device.compliant };`,
    );
    expectPolicyError(() => loadPolicySet(dir), /p\.cedar:1:\d+: .*optional attribute `device`/);
    writeFileSync(
      join(dir, "p.cedar"),
      `permit(principal, action == Action::"GET", resource) when { context has device && context.device.compliant };`,
    );
    expect(loadPolicySet(dir).policies).toHaveLength(1);
  });

  it("rejects duplicate ids and a missing directory", () => {
    writeFileSync(
      join(dir, "p.cedar"),
      `@id("x") permit(principal, action, resource);\n@id("x") forbid(principal, action, resource);`,
    );
    expectPolicyError(() => loadPolicySet(dir), /p\.cedar:2:1: duplicate policy id "x"/);
    expectPolicyError(() => loadPolicySet(join(dir, "nope")), /policy directory not found/);
  });

  it("uses the directory's schema.cedarschema, and reports schema errors with position", () => {
    writeFileSync(
      join(dir, "schema.cedarschema"),
      `entity Thing;\naction "use" appliesTo { principal: [Thing], resource: [Thing] };`,
    );
    writeFileSync(
      join(dir, "p.cedar"),
      `permit(principal is Thing, action == Action::"use", resource);`,
    );
    expect(loadPolicySet(dir).policies).toHaveLength(1);
    // zt's schema has no Thing:
    expectPolicyError(() => loadPolicySet(dir, { schema: "zt" }), /p\.cedar:1:\d+/);
    expect(loadPolicySet(dir, { schema: "none" }).schema).toBeUndefined();
    writeFileSync(join(dir, "schema.cedarschema"), `entity Thing;\n\nentity Broken {`);
    expectPolicyError(() => loadPolicySet(dir), /schema\.cedarschema:3:\d+:/);
  });

  it("loads templates and links from links.json", () => {
    writeFileSync(
      join(dir, "t.cedar"),
      `@id("owner") permit(principal == ?principal, action, resource == ?resource);`,
    );
    writeFileSync(
      join(dir, "links.json"),
      JSON.stringify([
        {
          templateId: "owner",
          newId: "alice-whoami",
          values: {
            "?principal": { type: "User", id: "alice" },
            "?resource": { type: "App", id: "whoami" },
          },
        },
      ]),
    );
    const set = loadPolicySet(dir);
    expect(set.policies[0]!.kind).toBe("template");
    const engine = createPolicyEngine("reference", set);
    const r = engine.authorize(request("alice", 60, "DELETE"), entities());
    expect(r.verdict).toBe("allow");
    expect(r.reasons).toEqual(["alice-whoami"]);
    expect(engine.authorize(request("bob", 60, "DELETE"), entities()).verdict).toBe("deny");
  });
});

describe.each<PolicyEngineKind>(["reference", "compiled"])("%s engine", (kind) => {
  function engine() {
    return createPolicyEngine(kind, parsePolicies([{ file: "demo.cedar", text: POLICIES }]));
  }

  it("allows through a nested group, with the permit's reason", () => {
    const r = engine().authorize(request("alice"), entities());
    expect(r).toMatchObject({
      decision: "allow",
      verdict: "allow",
      reasons: ["eng-get"],
      reason: "eng-can-read",
      errors: [],
    });
  });

  it("denies with no-matching-permit", () => {
    const r = engine().authorize(request("bob"), entities());
    expect(r).toMatchObject({
      decision: "deny",
      verdict: "deny",
      reasons: [],
      reason: "no-matching-permit",
    });
    expect(engine().authorize(request("alice", 60, "POST"), entities()).reason).toBe(
      "no-matching-permit",
    );
  });

  it("asks for step-up when only a @step_up forbid denies and a permit would allow", () => {
    const r = engine().authorize(request("alice", 7200), entities());
    expect(r).toMatchObject({
      decision: "deny",
      verdict: "step-up",
      reasons: ["mfa-fresh"],
      reason: "mfa-too-old",
    });
  });

  it("denies (not step-up) when a step-up would not help", () => {
    // bob has no permit: MFA would not change the answer.
    expect(engine().authorize(request("bob", 7200), entities())).toMatchObject({ verdict: "deny" });
    // carol is disabled: a non-step-up forbid also applies.
    const r = engine().authorize(request("carol", 7200), entities());
    expect(r).toMatchObject({ verdict: "deny", reasons: ["mfa-fresh", "no-disabled"] });
    expect(r.reason).toBe("mfa-too-old");
    expect(engine().authorize(request("carol", 60), entities())).toMatchObject({
      verdict: "deny",
      reason: "user-disabled",
    });
  });

  it("skips a policy that errors and reports it; policy-error when nothing else applies", () => {
    const set = parsePolicies([
      {
        file: "e.cedar",
        text: `@id("overflow") permit(principal, action, resource) when { context.mfa_age_seconds * 9223372036854775807 > 0 };`,
      },
    ]);
    const r = createPolicyEngine(kind, set).authorize(request("alice", 60), entities());
    expect(r).toMatchObject({ decision: "deny", verdict: "deny", reason: "policy-error" });
    expect(r.errors.map((e) => e.policyId)).toEqual(["overflow"]);
  });

  it("fails closed on garbage input", () => {
    const bad = {
      ...request("alice"),
      context: { source_ip: { __extn: { fn: "ip", arg: "not-an-ip" } } },
    };
    const r = engine().authorize(bad, entities());
    expect(r.decision).toBe("deny");
    expect(r.verdict).toBe("deny");
    expect(r.reason).toBe("policy-error");
  });

  it("sees entity updates (a user joins a group)", () => {
    const store = entities();
    const e = engine();
    expect(e.authorize(request("bob"), store).verdict).toBe("deny");
    store.upsert({
      uid: { type: "User", id: "bob" },
      attrs: { name: "bob" },
      parents: [{ type: "Group", id: "eng" }],
    });
    expect(e.authorize(request("bob"), store).verdict).toBe("allow");
  });
});
