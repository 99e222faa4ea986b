/**
 * The compiled engine's hot-path shortcuts, each shown equivalent to the general path or
 * to the reference engine (@cedar-policy/cedar-wasm):
 * - request contexts read lazily from the JSON (validated up front: a bad value still
 *   fails the whole request, as in Cedar);
 * - IPv4 and `Date.toISOString` datetimes parsed without the general parsers;
 * - candidate lists cached per entity key, dropped when the entity hierarchy changes.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { readsContextAttr } from "../src/policy/compiled/compiled-engine.js";
import { parseDatetime, parseIp } from "../src/policy/compiled/extensions.js";
import {
  createPolicyEngine,
  EntityStore,
  parsePolicies,
  type AuthorizationRequest,
  type CedarValue,
} from "../src/policy/index.js";

const DAY = 86_400_000;

describe("datetime: the toISOString fast path agrees with the general parser", () => {
  it("on every instant of years 0000–9999 (same instant written with a +0000 offset)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -62_167_219_200_000, max: 253_402_300_799_999 }),
        fc.boolean(),
        (ms, withMillis) => {
          const iso = new Date(ms).toISOString(); // YYYY-MM-DDThh:mm:ss.sssZ
          const z = withMillis ? iso : `${iso.slice(0, 19)}Z`;
          const general = `${z.slice(0, -1)}+0000`; // not the fast form
          const expected = withMillis ? ms : Math.floor(ms / 1000) * 1000;
          expect(parseDatetime(z)?.ms).toBe(expected);
          expect(parseDatetime(general)?.ms).toBe(expected);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("refuses the same invalid dates and times as the general parser", () => {
    for (const bad of [
      "2026-13-01T00:00:00Z",
      "2026-00-10T00:00:00Z",
      "2026-02-29T00:00:00Z",
      "2024-02-30T00:00:00.000Z",
      "2026-04-31T00:00:00Z",
      "2026-01-01T24:00:00Z",
      "2026-01-01T23:60:00Z",
      "2026-01-01T23:59:60Z",
      "2026-01-01T23:59:59.1Z",
      "2026-01-01t23:59:59Z",
      "2026-01-01T23:59:5xZ",
      "+026-01-01T23:59:59Z",
    ]) {
      expect(parseDatetime(bad), bad).toBeUndefined();
      if (bad.endsWith("Z")) expect(parseDatetime(`${bad.slice(0, -1)}+0000`)).toBeUndefined();
    }
    expect(parseDatetime("2024-02-29T12:00:00Z")?.ms).toBe(Date.UTC(2024, 1, 29, 12));
    expect(parseDatetime("1969-12-31T23:59:59.999Z")?.ms).toBe(-1);
    expect(parseDatetime("2026-01-01")?.ms).toBe(Date.UTC(2026, 0, 1));
  });
});

describe("ip: the IPv4 fast path", () => {
  it("parses every dotted quad with an optional prefix, and nothing Rust's parser refuses", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
        fc.option(fc.integer({ min: 0, max: 32 }), { nil: undefined }),
        (o, prefix) => {
          const text = o.join(".") + (prefix === undefined ? "" : `/${prefix}`);
          const ip = parseIp(text);
          expect(ip?.v6).toBe(false);
          expect(ip?.v4).toBe(((o[0]! * 256 + o[1]!) * 256 + o[2]!) * 256 + o[3]!);
          expect(ip?.prefix).toBe(prefix ?? 32);
        },
      ),
      { numRuns: 1000 },
    );
    for (const bad of [
      "10.0.0.256",
      "10.0.0",
      "10.0.0.1.",
      "010.0.0.1",
      "10.0.0.1/33",
      "10.0.0.1/08",
      "10.0.0.1//8",
      "1.2.3.4/",
      "1..2.3",
    ])
      expect(parseIp(bad), bad).toBeUndefined();
  });
});

const SET = parsePolicies(
  [
    {
      file: "hot.cedar",
      text: `
@id("ip") permit(principal, action == Action::"GET", resource)
  when { context.src.isInRange(ip("10.0.0.0/8")) && context.at < datetime("2030-01-01T00:00:00Z") };
@id("mfa") @step_up forbid(principal, action, resource) when { context.mfa_age_seconds > 3600 };
@id("eng") permit(principal in Group::"eng", action == Action::"POST", resource);
@id("rec") permit(principal, action == Action::"PUT", resource)
  when { context.dev.ok && context.dev has os && context.n == 7 };
`,
    },
  ],
  { schema: null },
);

function request(action: string, context: Record<string, CedarValue>): AuthorizationRequest {
  return {
    principal: { type: "User", id: "alice" },
    action: { type: "Action", id: action },
    resource: { type: "App", id: "wiki" },
    context,
  };
}

describe("lazy request contexts agree with the reference engine", () => {
  const store = new EntityStore([
    { uid: { type: "User", id: "alice" }, attrs: {}, parents: [] },
    { uid: { type: "App", id: "wiki" }, attrs: {}, parents: [] },
  ]);
  const compiled = createPolicyEngine("compiled", SET);
  const reference = createPolicyEngine("reference", SET);
  const both = (r: AuthorizationRequest) => {
    const c = compiled.authorize(r, store);
    const ref = reference.authorize(r, store);
    expect({ verdict: c.verdict, reasons: c.reasons, reason: c.reason }).toEqual({
      verdict: ref.verdict,
      reasons: ref.reasons,
      reason: ref.reason,
    });
    return c;
  };

  it("on random source addresses, instants, MFA ages and nested records", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.ipV4(),
          fc.constantFrom("10.0.0.1/8", "010.1.1.1", "10.0.0.256", "::1", "10.1.2"),
        ),
        fc.integer({ min: 1_700_000_000_000, max: 1_950_000_000_000 }),
        fc.integer({ min: 0, max: 7200 }),
        fc.record({ ok: fc.boolean(), os: fc.option(fc.string(), { nil: undefined }) }),
        fc.constantFrom("GET", "PUT"),
        (src, at, mfa, dev, action) => {
          const devJson: Record<string, CedarValue> = { ok: dev.ok };
          if (dev.os !== undefined) devJson["os"] = dev.os;
          both(
            request(action, {
              src: { __extn: { fn: "ip", arg: src } },
              at: { __extn: { fn: "datetime", arg: new Date(at).toISOString() } },
              mfa_age_seconds: mfa,
              dev: devJson,
              n: 7,
            }),
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it("a bad value anywhere in the context fails the request, even if no policy reads it", () => {
    const good = {
      src: { __extn: { fn: "ip", arg: "10.1.1.1" } },
      at: { __extn: { fn: "datetime", arg: "2026-01-01T00:00:00Z" } },
      mfa_age_seconds: 0,
    };
    expect(both(request("GET", good)).verdict).toBe("allow");
    for (const bad of [
      { unused: 1.5 },
      { unused: { __extn: { fn: "ip", arg: "not-an-ip" } } },
      { unused: { nested: { __extn: { fn: "datetime", arg: "2026-13-01" } } } },
      { unused: [1, 2.5] },
    ]) {
      const r = both(request("GET", { ...good, ...bad } as Record<string, CedarValue>));
      expect(r.verdict).toBe("deny");
      expect(r.reason).toBe("policy-error");
    }
  });

  it("step-up: the fresh-MFA re-evaluation sees mfa_age_seconds = 0 and nothing else changed", () => {
    const r = both(
      request("GET", {
        src: { __extn: { fn: "ip", arg: "10.1.1.1" } },
        at: { __extn: { fn: "datetime", arg: "2026-01-01T00:00:00Z" } },
        mfa_age_seconds: 7200,
      }),
    );
    expect(r.verdict).toBe("step-up");
  });

  it("records with many structured attributes (Map-backed) answer the same", () => {
    const wide = parsePolicies(
      [
        {
          file: "wide.cedar",
          text: `@id("w") permit(principal, action, resource)
  when { context.s9.contains(9) && context.s0.contains(0) && context.n == -0 && context.r.x == "y" };`,
        },
      ],
      { schema: null },
    );
    const c = createPolicyEngine("compiled", wide);
    const ref = createPolicyEngine("reference", wide);
    for (const width of [3, 8, 9, 12]) {
      const ctx: Record<string, CedarValue> = { n: 0, r: { x: "y" } };
      for (let i = 0; i < width; i++) ctx[`s${i}`] = [i];
      const r = request("GET", ctx);
      expect(c.authorize(r, store).verdict).toBe(ref.authorize(r, store).verdict);
      expect(c.authorize(r, store).verdict).toBe(width >= 10 ? "allow" : "deny");
    }
  });

  it("reads only own enumerable attributes, like the eager conversion", () => {
    const ctx = Object.create({ n: 7 }) as Record<string, CedarValue>;
    Object.defineProperty(ctx, "hidden", { value: 1, enumerable: false });
    ctx["dev"] = { ok: true, os: "linux" };
    // `n` is inherited, so `context.n` is a missing attribute: an error, not 7.
    const r = compiled.authorize(request("PUT", ctx), store);
    expect(r.verdict).toBe("deny");
    expect(r.errors.map((e) => e.policyId)).toContain("rec");
  });
});

describe("escape-shaped objects agree with the reference engine", () => {
  it("an object that is not a well-formed __entity / __extn escape is an ordinary record", () => {
    const set = parsePolicies(
      [
        {
          file: "esc.cedar",
          text: `@id("has") permit(principal, action == Action::"GET", resource) when { context has r };
@id("rec") permit(principal, action == Action::"PUT", resource) when { context.r has __entity };
@id("ent") permit(principal, action == Action::"POST", resource) when { context.r is User };`,
        },
      ],
      { schema: null },
    );
    const store = new EntityStore([{ uid: { type: "User", id: "alice" }, attrs: {}, parents: [] }]);
    const compiled = createPolicyEngine("compiled", set);
    const reference = createPolicyEngine("reference", set);
    const shapes: unknown[] = [
      { __entity: { type: "User" } },
      { __entity: "User::alice" },
      { __entity: { type: 5, id: "a" } },
      { __entity: { type: "User", id: 7 } },
      { __entity: [] },
      { __entity: { type: "User", id: "a", x: 1 } },
      { __entity: { type: "User", id: "a" }, other: 1 },
      { __entity: null },
      { __extn: { fn: "ip" } },
      { __extn: "ip" },
      { __extn: { fn: 5, arg: "x" } },
      { __extn: { fn: "nosuch", arg: "x" } },
      { __extn: { fn: "ip", arg: 5 } },
      { __extn: { fn: "ip", args: ["10.0.0.1"] } },
      { __extn: { fn: "ip", arg: "10.0.0.1" }, x: 1 },
    ];
    const show = (x: { verdict: string; reason: string; errors: unknown[] }) =>
      `${x.verdict}/${x.reason}/${x.errors.length}`;
    for (const r of shapes) {
      for (const action of ["GET", "PUT", "POST"]) {
        const req = request(action, { r } as Record<string, CedarValue>);
        expect(show(compiled.authorize(req, store)), `${JSON.stringify(r)} ${action}`).toBe(
          show(reference.authorize(req, store)),
        );
      }
    }
  });
});

describe("candidate cache follows the entity hierarchy", () => {
  it("a user who joins or leaves a group is decided on the new hierarchy", () => {
    const store = new EntityStore([
      { uid: { type: "User", id: "bob" }, attrs: {}, parents: [] },
      { uid: { type: "Group", id: "eng" }, attrs: {}, parents: [] },
      { uid: { type: "Group", id: "all" }, attrs: {}, parents: [] },
    ]);
    const engine = createPolicyEngine("compiled", SET);
    const post = {
      principal: { type: "User", id: "bob" },
      action: { type: "Action", id: "POST" },
      resource: { type: "App", id: "wiki" },
      context: { mfa_age_seconds: 0 },
    };
    const v0 = store.version;
    for (let i = 0; i < 3; i++) expect(engine.authorize(post, store).verdict).toBe("deny");
    store.upsert({ uid: { type: "User", id: "bob" }, attrs: { x: 1 }, parents: [] });
    expect(store.version).toBe(v0); // attributes only: the hierarchy did not change
    store.upsert({
      uid: { type: "User", id: "bob" },
      attrs: {},
      parents: [{ type: "Group", id: "eng" }],
    });
    expect(store.version).toBeGreaterThan(v0);
    expect(engine.authorize(post, store).verdict).toBe("allow");
    // Membership through a group of a group (the group's parents change, not bob's).
    store.upsert({
      uid: { type: "User", id: "bob" },
      attrs: {},
      parents: [{ type: "Group", id: "all" }],
    });
    expect(engine.authorize(post, store).verdict).toBe("deny");
    store.upsert({
      uid: { type: "Group", id: "all" },
      attrs: {},
      parents: [{ type: "Group", id: "eng" }],
    });
    expect(engine.authorize(post, store).verdict).toBe("allow");
    store.remove({ type: "Group", id: "all" });
    expect(engine.authorize(post, store).verdict).toBe("deny");
    // A second store with other memberships, same engine: no cross-talk.
    const other = new EntityStore([
      { uid: { type: "User", id: "bob" }, attrs: {}, parents: [{ type: "Group", id: "eng" }] },
    ]);
    expect(engine.authorize(post, other).verdict).toBe("allow");
    expect(engine.authorize(post, store).verdict).toBe("deny");
  });

  it("entity attributes: converted once per entity version when structured, wrapped per decision when primitive", () => {
    const store = new EntityStore([
      { uid: { type: "User", id: "c" }, attrs: { level: 1, teams: ["x"] }, parents: [] },
      { uid: { type: "User", id: "p" }, attrs: { level: 1 }, parents: [] },
    ]);
    const set = parsePolicies(
      [
        {
          file: "lvl.cedar",
          text: `@id("lvl") permit(principal, action, resource) when { principal.level > 2 };`,
        },
      ],
      { schema: null },
    );
    const engine = createPolicyEngine("compiled", set);
    const req = (id: string) => ({
      principal: { type: "User", id },
      action: { type: "Action", id: "GET" },
      resource: { type: "App", id: "x" },
      context: {},
    });
    for (const id of ["c", "p"]) {
      expect(engine.authorize(req(id), store).verdict).toBe("deny");
      store.upsert({ uid: { type: "User", id }, attrs: { level: 3, teams: ["x"] }, parents: [] });
      if (id === "p") store.upsert({ uid: { type: "User", id }, attrs: { level: 3 }, parents: [] });
      expect(engine.authorize(req(id), store).verdict).toBe("allow");
    }
    // Kept: a set had to be converted. Not kept: strings and numbers are read in place.
    expect(store.entryByKey("User\u0000c")?.derived).toBeDefined();
    expect(store.entryByKey("User\u0000p")?.derived).toBeUndefined();
  });
});

describe("scope filter bits: a scope is ruled out from the policy alone only when it cannot match", () => {
  it("agrees with the reference engine for stored and unknown principals and resources, equal to or in the named uid", () => {
    const groups = Array.from({ length: 120 }, (_, i) => `g${i}`);
    const text = [
      ...groups.map(
        (gid, i) =>
          `@id("in-${i}") permit(principal in Group::"${gid}", action, resource == App::"a${i % 7}");`,
      ),
      `@id("eq-user") permit(principal == User::"u1", action, resource);`,
      `@id("eq-group") permit(principal == Group::"g5", action, resource);`,
      `@id("ghost") permit(principal == User::"ghost", action, resource in App::"suite");`,
      `@id("is-in") forbid(principal is User in Group::"g9", action, resource is App in App::"suite");`,
    ].join("\n");
    const set = parsePolicies([{ file: "bits.cedar", text }], { schema: null });
    const users = Array.from({ length: 30 }, (_, i) => ({
      uid: { type: "User", id: `u${i}` },
      attrs: {},
      parents: [{ type: "Group", id: groups[(i * 7) % groups.length]! }],
    }));
    const store = new EntityStore([
      ...groups.map((gid, i) => ({
        uid: { type: "Group", id: gid },
        attrs: {},
        parents: i > 0 ? [{ type: "Group", id: groups[Math.floor(i / 3)]! }] : [],
      })),
      ...users,
      { uid: { type: "App", id: "a1" }, attrs: {}, parents: [{ type: "App", id: "suite" }] },
    ]);
    const compiled = createPolicyEngine("compiled", set);
    const reference = createPolicyEngine("reference", set);
    const principals = [
      ...users.map((u) => u.uid),
      { type: "User", id: "ghost" },
      { type: "Group", id: "g5" },
      { type: "Group", id: "g9" },
    ];
    const resources = ["a0", "a1", "a3", "suite", "nowhere"].map((id) => ({ type: "App", id }));
    let allowed = 0;
    for (const principal of principals)
      for (const resource of resources) {
        const req = { principal, action: { type: "Action", id: "GET" }, resource, context: {} };
        const c = compiled.authorize(req, store);
        const r = reference.authorize(req, store);
        expect([c.decision, c.reasons], `${principal.id} → ${resource.id}`).toEqual([
          r.decision,
          r.reasons,
        ]);
        if (c.decision === "allow") allowed++;
      }
    expect(allowed).toBeGreaterThan(10);
  });
});

it("DAY constant sanity (the fast path's day length)", () => {
  expect(parseDatetime("1970-01-02T00:00:00Z")?.ms).toBe(DAY);
});

describe("step-up: only policies that read the MFA age are evaluated again", () => {
  const conditions = [
    "context.mfa_age_seconds > 3600",
    "context.mfa_age_seconds < 3600",
    "context.mfa_age_seconds == 0",
    "context has mfa_age_seconds",
    "context.n > 5",
    "context.missing > 1", // an error: the policy is skipped
    'context == {"n": 1}', // the context as a whole: may depend on the MFA age
    "context.rec.mfa_age_seconds > 1", // another record's attribute of that name
    'principal in Group::"g"',
    "true",
  ];
  const policy = fc
    .record({
      effect: fc.constantFrom("permit", "forbid"),
      stepUp: fc.boolean(),
      reason: fc.option(fc.constantFrom("r1", "r2"), { nil: undefined }),
      c1: fc.constantFrom(...conditions),
      op: fc.constantFrom("&&", "||"),
      c2: fc.constantFrom(...conditions),
      unless: fc.boolean(),
    })
    .map(
      (p) =>
        `${p.stepUp ? "@step_up " : ""}${p.reason ? `@reason("${p.reason}") ` : ""}` +
        `${p.effect}(principal, action, resource) ${p.unless ? "unless" : "when"} { ${p.c1} ${p.op} ${p.c2} };`,
    );
  const store = new EntityStore([
    { uid: { type: "User", id: "u" }, attrs: {}, parents: [{ type: "Group", id: "g" }] },
    { uid: { type: "User", id: "v" }, attrs: {}, parents: [] },
  ]);

  it("gives the reference engine's verdict (which re-evaluates every policy)", () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(
        fc.array(policy, { minLength: 1, maxLength: 6 }),
        fc.constantFrom("u", "v"),
        fc.option(fc.integer({ min: 0, max: 10_000 }), { nil: undefined }),
        fc.integer({ min: 0, max: 10 }),
        fc.boolean(),
        (texts, user, mfa, n, withRec) => {
          const set = parsePolicies(
            texts.map((t, i) => ({ file: "s.cedar", text: `@id("p${i}") ${t}` })),
            { schema: null },
          );
          const context: Record<string, CedarValue> = { n };
          if (mfa !== undefined) context["mfa_age_seconds"] = mfa;
          if (withRec) context["rec"] = { mfa_age_seconds: 5 };
          const req: AuthorizationRequest = {
            principal: { type: "User", id: user },
            action: { type: "Action", id: "GET" },
            resource: { type: "App", id: "a" },
            context,
          };
          const a = createPolicyEngine("compiled", set).authorize(req, store);
          const b = createPolicyEngine("reference", set).authorize(req, store);
          seen.add(a.verdict);
          expect({ v: a.verdict, r: a.reason, d: a.reasons }).toEqual({
            v: b.verdict,
            r: b.reason,
            d: b.reasons,
          });
        },
      ),
      { numRuns: 300 },
    );
    // The generator reaches every verdict, or the comparison proves little.
    expect([...seen].sort()).toEqual(["allow", "deny", "step-up"]);
  }, 120_000);

  it("finds every read of the MFA age in a policy's JSON form", () => {
    const json = (cond: string) => {
      const set = parsePolicies(
        [{ file: "r.cedar", text: `permit(principal, action, resource) when { ${cond} };` }],
        { schema: null },
      );
      return (set.policies[0]!.json as { conditions: unknown }).conditions;
    };
    const reads = (cond: string) => readsContextAttr(json(cond), "mfa_age_seconds");
    expect(reads("context.mfa_age_seconds > 1")).toBe(true);
    expect(reads("context has mfa_age_seconds")).toBe(true);
    expect(reads('context == {"a": 1}')).toBe(true);
    expect(reads("if context.n > 1 then context.mfa_age_seconds < 5 else false")).toBe(true);
    expect(reads("context.n > 1 && context.device.compliant")).toBe(false);
    expect(reads("context.rec.mfa_age_seconds > 1")).toBe(false);
    expect(reads("principal.mfa_age_seconds > 1")).toBe(false);
  });
});

describe("candidate lists: a listed policy's scope is not checked again unless listing cannot prove it", () => {
  it("`is T in X` is listed under X for every type, so the type is still checked", () => {
    const text = [
      '@id("users-in-g") permit(principal is User in Group::"g", action, resource is App in Group::"apps");',
      '@id("any-in-g") permit(principal in Group::"g", action == Action::"POST", resource);',
      ...Array.from(
        { length: 40 },
        (_, i) => `@id("filler${i}") permit(principal == User::"nobody${i}", action, resource);`,
      ),
    ].join("\n");
    const set = parsePolicies([{ file: "is-in.cedar", text }], { schema: null });
    const store = new EntityStore([
      { uid: { type: "Group", id: "g" }, attrs: {}, parents: [] },
      { uid: { type: "Group", id: "sub" }, attrs: {}, parents: [{ type: "Group", id: "g" }] },
      { uid: { type: "User", id: "u" }, attrs: {}, parents: [{ type: "Group", id: "sub" }] },
      { uid: { type: "Group", id: "apps" }, attrs: {}, parents: [] },
      { uid: { type: "App", id: "a" }, attrs: {}, parents: [{ type: "Group", id: "apps" }] },
      { uid: { type: "Group", id: "b" }, attrs: {}, parents: [{ type: "Group", id: "apps" }] },
    ]);
    const compiled = createPolicyEngine("compiled", set);
    const ref = createPolicyEngine("reference", set);
    const cases: [string, string, string, string][] = [
      ["User", "u", "App", "a"], // both constraints hold
      ["Group", "sub", "App", "a"], // in g, but not a User
      ["User", "u", "Group", "b"], // in apps, but not an App
      ["Group", "sub", "Group", "b"],
    ];
    const seen: string[] = [];
    for (const [pt, pid, rt, rid] of cases) {
      for (const action of ["GET", "POST"]) {
        const req: AuthorizationRequest = {
          principal: { type: pt, id: pid },
          action: { type: "Action", id: action },
          resource: { type: rt, id: rid },
          context: {},
        };
        // Twice: the second answer comes from the cached candidate lists.
        for (let k = 0; k < 2; k++) {
          const a = compiled.authorize(req, store);
          expect(a.reasons).toEqual(ref.authorize(req, store).reasons);
          seen.push(`${pt}/${rt}/${action}:${a.reasons.join(",")}`);
        }
      }
    }
    expect(seen).toContain("User/App/GET:users-in-g");
    expect(seen).toContain("Group/App/GET:");
    expect(seen).toContain("User/Group/GET:");
    expect(seen).toContain("Group/Group/POST:any-in-g");
  });
});

describe("policies with the same conditions share compiled closures", () => {
  it("shares only what is the same: constants of every type keep them apart; template links share conditions, not scopes", () => {
    const text = [
      '@id("big") permit(principal, action, resource) when { context.x == 9223372036854775807 };',
      '@id("big-again") permit(principal, action, resource) when { context.x == 9223372036854775807 };',
      '@id("text") permit(principal, action, resource) when { context.x == "9223372036854775807" };',
      '@id("textB") permit(principal, action, resource) when { context.x == "B9223372036854775807" };',
      '@id("small") permit(principal, action, resource) when { context.x == 9223372036854775806 };',
      '@id("t") permit(principal in ?principal, action, resource) when { context.x == 1 };',
    ].join("\n");
    const set = parsePolicies([{ file: "share.cedar", text }], { schema: null });
    set.templateLinks.push(
      { templateId: "t", newId: "t-u", values: { "?principal": { type: "User", id: "u" } } },
      { templateId: "t", newId: "t-v", values: { "?principal": { type: "User", id: "v" } } },
    );
    const compiled = createPolicyEngine("compiled", set);
    const ref = createPolicyEngine("reference", set);
    const store = new EntityStore([]);
    const results: string[] = [];
    for (const x of [
      9223372036854775807n,
      "9223372036854775807",
      "B9223372036854775807",
      9223372036854775806n,
      1,
    ]) {
      for (const user of ["u", "v", "w"]) {
        const req: AuthorizationRequest = {
          principal: { type: "User", id: user },
          action: { type: "Action", id: "GET" },
          resource: { type: "App", id: "a" },
          context: { x: x as unknown as CedarValue },
        };
        const a = compiled.authorize(req, store);
        // (The reference binding takes no bigint in a JS context: checked by value below.)
        if (typeof x !== "bigint") expect(a.reasons).toEqual(ref.authorize(req, store).reasons);
        results.push(`${String(x)}/${user}:${a.reasons.join(",")}`);
      }
    }
    expect(results).toContain("9223372036854775807/w:big,big-again");
    expect(results).toContain("9223372036854775807/u:big,big-again");
    expect(results).toContain("B9223372036854775807/w:textB");
    expect(results).toContain("9223372036854775806/v:small");
    expect(results).toContain("1/u:t-u");
    expect(results).toContain("1/v:t-v");
    expect(results).toContain("1/w:");
  });
});
