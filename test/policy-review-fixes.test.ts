/**
 * Regressions from the policy engine review, each stated against the reference engine
 * (@cedar-policy/cedar-wasm) where a difference would have let the compiled engine allow
 * what Cedar denies, or stall a PEP.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createPolicyEngine,
  EntityStore,
  explainDecision,
  httpContext,
  parsePolicies,
  ZT_SCHEMA,
  type AuthorizationRequest,
  type CedarEntity,
  type CedarValue,
} from "../src/policy/index.js";

const request = (context: Record<string, CedarValue> = {}): AuthorizationRequest => ({
  principal: { type: "User", id: "alice" },
  action: { type: "Action", id: "GET" },
  resource: { type: "App", id: "wiki" },
  context,
});

function setOf(...texts: string[]) {
  return parsePolicies(
    texts.map((t, i) => ({ file: "review.cedar", text: `@id("p${i}") ${t}` })),
    { schema: null },
  );
}

function bothEngines(texts: string[], entities: CedarEntity[], req: AuthorizationRequest) {
  const set = setOf(...texts);
  const store = new EntityStore(entities);
  return {
    compiled: createPolicyEngine("compiled", set).authorize(req, store),
    reference: createPolicyEngine("reference", set).authorize(req, store),
  };
}

describe("invalid entity data fails the request (fail closed), as in Cedar", () => {
  const policies = [
    `permit(principal, action, resource);`,
    `forbid(principal, action, resource) when { principal.disabled };`,
  ];
  for (const [what, bad] of [
    ["a null", null],
    ["a fraction", 1.5],
    ["an invalid ip escape", { __extn: { fn: "ip", arg: "not-an-ip" } }],
  ] as const) {
    it(`a forbid reading an entity with ${what} attribute is not skipped into an allow`, () => {
      const alice: CedarEntity = {
        uid: { type: "User", id: "alice" },
        attrs: { disabled: true, bad: bad as unknown as CedarValue },
        parents: [],
      };
      const { compiled, reference } = bothEngines(policies, [alice], request());
      expect(reference.decision).toBe("deny");
      expect(compiled.decision).toBe("deny");
      expect(compiled.verdict).toBe("deny");
      expect(compiled.reason).toBe("policy-error");
      expect(compiled.errors[0]?.message).toContain(`User::"alice"`);
    });
  }

  it("the same through a view that is not an EntityStore, and in explain", () => {
    const set = setOf(...policies);
    const alice: CedarEntity = {
      uid: { type: "User", id: "alice" },
      attrs: { disabled: true, bad: null as unknown as CedarValue },
      parents: [],
    };
    const view = {
      get: (uid: { type: string; id: string }) =>
        uid.type === "User" && uid.id === "alice" ? alice : undefined,
      isIn: () => false,
      all: () => [alice],
    };
    expect(createPolicyEngine("compiled", set).authorize(request(), view).decision).toBe("deny");
    const ex = explainDecision(set, request(), view);
    expect(ex.result.decision).toBe("deny");
    expect(ex.policies.find((p) => p.id === "p1")?.outcome).toBe("error");
  });
});

describe("an attribute set to undefined is absent, as cedar-wasm reads it", () => {
  const policies = [
    `permit(principal, action, resource);`,
    `forbid(principal, action, resource) unless { principal has email };`,
    `forbid(principal, action, resource) unless { context has mfa };`,
  ];
  it("on an entity: `unless { principal has email }` forbids (not an error that skips it)", () => {
    const alice = {
      uid: { type: "User", id: "alice" },
      attrs: { email: undefined },
      parents: [],
    } as unknown as CedarEntity;
    const { compiled, reference } = bothEngines(
      policies,
      [alice],
      request({ mfa: true, undef: undefined as unknown as CedarValue }),
    );
    expect(reference.reasons).toEqual(["p1"]);
    expect({ d: compiled.decision, r: compiled.reasons, e: compiled.errors }).toEqual({
      d: reference.decision,
      r: reference.reasons,
      e: [],
    });
  });

  it("in a context record: `unless { context has mfa }` forbids", () => {
    const alice: CedarEntity = {
      uid: { type: "User", id: "alice" },
      attrs: { email: "a@example.test" },
      parents: [],
    };
    const { compiled, reference } = bothEngines(
      policies,
      [alice],
      request({ mfa: undefined as unknown as CedarValue, n: 1, r: { x: 1 } }),
    );
    expect(reference.reasons).toEqual(["p2"]);
    expect({ d: compiled.decision, r: compiled.reasons, e: compiled.errors }).toEqual({
      d: reference.decision,
      r: reference.reasons,
      e: [],
    });
  });
});

describe("`like` without regex backtracking", () => {
  it("agrees with cedar-wasm on random patterns and strings (differential)", () => {
    const store = new EntityStore([]);
    let compared = 0;
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("a", "b", "ab", "*", "\\*", "\u00e9", "\u{1F600}", "\\\\", "."), {
          maxLength: 7,
        }),
        fc.array(fc.constantFrom("a", "b", "*", "\\", "\u00e9", "\u{1F600}", "\n", "."), {
          maxLength: 10,
        }),
        (pattern, chars) => {
          const text = `permit(principal, action, resource) when { context.s like "${pattern.join("")}" };`;
          const parts = cedar.policySetTextToParts(text);
          fc.pre(parts.type === "success");
          const set = parsePolicies([{ file: "like.cedar", text }], { schema: null });
          const req = request({ s: chars.join("") });
          const mine = createPolicyEngine("compiled", set).authorize(req, store);
          const ref = createPolicyEngine("reference", set).authorize(req, store);
          expect(mine.decision, JSON.stringify({ text, s: req.context["s"] })).toBe(ref.decision);
          compared++;
        },
      ),
      { numRuns: 1500 },
    );
    expect(compared).toBeGreaterThan(500);
  });

  it("a 16 KB path against a pattern with many wildcards is decided (a regex took O(n^k))", () => {
    const set = setOf(
      `permit(principal, action, resource) when { context.path like "*/v1/*/v2/*/v3/*/v4/*/end" };`,
    );
    const engine = createPolicyEngine("compiled", set);
    const store = new EntityStore([]);
    const path = "/v1/v2/v3/v4".repeat(1366); // ~16 KB, every segment but the last
    expect(engine.authorize(request({ path }), store).decision).toBe("deny");
    expect(engine.authorize(request({ path: `${path}/end` }), store).decision).toBe("allow");
  });
});

describe("@reason is a stable kebab-case word list, checked at load", () => {
  it("a reason forward-auth could not put in X-Zt-Reason (it answered 500) is refused with file:line:col", () => {
    for (const bad of [
      "closed \u2713 now",
      "a\\nb",
      "Too-Old",
      "mfa--old",
      "",
      "-x",
      "x".repeat(101),
    ]) {
      const text = `permit(principal, action, resource);\n@id("f") @reason("${bad}")\nforbid(principal, action, resource);`;
      expect(() => parsePolicies([{ file: "r.cedar", text }], { schema: null }), bad).toThrow(
        /^r\.cedar:2:1: @reason\(.*\): expected a kebab-case reason/,
      );
    }
    const ok = parsePolicies(
      [{ file: "r.cedar", text: `@reason("mfa-too-old-2") forbid(principal, action, resource);` }],
      { schema: null },
    );
    expect(ok.policies[0]!.annotations["reason"]).toBe("mfa-too-old-2");
  });
});

describe("action groups declared by a policy directory's own schema", () => {
  // A schema.cedarschema that groups the writing methods under Action::"write".
  const schema = ZT_SCHEMA.replace(
    `action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE" appliesTo {`,
    `action "write";
action "GET", "HEAD", "OPTIONS", "CONNECT", "TRACE" appliesTo {
  principal: [User, Service],
  resource: [App],
  context: HttpContext,
};
action "POST", "PUT", "PATCH", "DELETE" in ["write"] appliesTo {`,
  );
  const set = parsePolicies(
    [
      {
        file: "main.cedar",
        text: `@id("all") permit(principal, action, resource);
@id("read-only-prod") forbid(principal, action in Action::"write", resource == App::"prod");
@id("no-write-wiki") forbid(principal, action, resource == App::"wiki") when { action in Action::"write" };`,
      },
    ],
    { schema },
  );
  // What the PEP's entity snapshot holds: users and apps, no actions.
  const store = new EntityStore([
    { uid: { type: "User", id: "alice" }, attrs: { name: "alice" }, parents: [] },
    { uid: { type: "App", id: "prod" }, attrs: { name: "prod" }, parents: [] },
    { uid: { type: "App", id: "wiki" }, attrs: { name: "wiki" }, parents: [] },
  ]);
  const ask = (method: string, app: string): AuthorizationRequest => ({
    principal: { type: "User", id: "alice" },
    action: { type: "Action", id: method },
    resource: { type: "App", id: app },
    context: httpContext({
      sourceIp: "10.0.0.1",
      host: `${app}.example.test`,
      path: "/",
      mfaAgeSeconds: 60,
      timeMs: Date.UTC(2026, 0, 5, 9),
      authenticatedBy: "session",
    }),
  });

  for (const kind of ["compiled", "reference"] as const) {
    it(`${kind}: a forbid on the group applies though the entity store holds no action (it validated, then never applied)`, () => {
      const engine = createPolicyEngine(kind, set);
      const del = engine.authorize(ask("DELETE", "prod"), store);
      expect({ v: del.verdict, r: del.reasons }).toEqual({ v: "deny", r: ["read-only-prod"] });
      const post = engine.authorize(ask("POST", "wiki"), store);
      expect({ v: post.verdict, r: post.reasons }).toEqual({ v: "deny", r: ["no-write-wiki"] });
      const get = engine.authorize(ask("GET", "prod"), store);
      expect({ v: get.verdict, r: get.reasons }).toEqual({ v: "allow", r: ["all"] });
      // Through a view that is not an EntityStore too.
      const view = {
        get: store.get.bind(store),
        isIn: store.isIn.bind(store),
        all: () => store.all(),
      };
      expect(engine.authorize(ask("PUT", "prod"), view).verdict).toBe("deny");
    });
  }

  it("explain shows the group forbid applying", () => {
    const ex = explainDecision(set, ask("PATCH", "prod"), store);
    expect(ex.result.verdict).toBe("deny");
    expect(ex.policies.find((p) => p.id === "read-only-prod")?.outcome).toBe("satisfied");
  });
});
