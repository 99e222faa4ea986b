/**
 * Differential property tests: random policies, entity graphs and requests, evaluated by
 * zt's compiled engine and by the reference @cedar-policy/cedar-wasm (`isAuthorized`, all
 * entities passed). Decision, determining policies and erroring policies must agree.
 * The generators aim at the tricky corners: errors inside forbid, Long overflow, missing
 * attributes and entities, deep hierarchies, `like` escapes, extension functions.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createPolicyEngine,
  EntityStore,
  parsePolicies,
  type AuthorizationRequest,
  type CedarEntity,
  type CedarValue,
} from "../src/policy/index.js";

type Gen = fc.Arbitrary<string>;

const USERS = ["u0", "u1", "u2"];
const GROUPS = ["g0", "g1", "g2", "g3", "g4"];
const APPS = ["a0", "a1"];
const ACTIONS = ["view", "edit", "admin"];
const ATTRS = ["n", "s", "b", "set", "rec", "ref", "ip", "dec", "dt", "dur", "missing"];

const str = (s: string) => JSON.stringify(s);
const BIG = [
  "0",
  "1",
  "-1",
  "7",
  "9223372036854775807",
  "-9223372036854775808",
  "4611686018427387904",
  "9007199254740993",
  "3037000500",
];
const IPS = [
  "10.0.0.1",
  "10.0.0.0/8",
  "127.0.0.1",
  "::1",
  "ff02::1/16",
  "224.0.0.1",
  "192.168.1.300",
  "01.2.3.4",
  "::ffff:1.2.3.4",
  "2001:db8::/32",
  "0.0.0.0/0",
];
const DECS = [
  "1.5",
  "-0.0001",
  "922337203685477.5807",
  "922337203685477.5808",
  "1.23456",
  "3",
  "0.0",
];
const DTS = [
  "2024-01-01",
  "2024-02-30",
  "2024-06-15T12:30:00Z",
  "2024-06-15T12:30:00.123+0530",
  "1969-12-31T23:59:59.999Z",
  "0000-01-01",
  "9999-12-31T23:59:59Z",
  "2024-01-01T24:00:00Z",
];
const DURS = [
  "1h",
  "-1d2h",
  "90m",
  "1ms",
  "106751991167d",
  "9223372036854775807ms",
  "-9223372036854775808ms",
  "1d1h1m1s1ms",
  "",
  "1x",
];

const uidText = fc.oneof(
  fc.constantFrom(...USERS).map((u) => `User::${str(u)}`),
  fc.constantFrom(...GROUPS).map((g) => `Group::${str(g)}`),
  fc.constantFrom(...APPS).map((a) => `App::${str(a)}`),
  fc.constantFrom("ghost").map((x) => `User::${str(x)}`),
);

const leafAny: Gen = fc.oneof(
  fc.constantFrom("principal", "resource", "context", "action"),
  fc.constantFrom(...BIG),
  fc.constantFrom("true", "false"),
  fc.constantFrom(...["", "a", "ab*", "x\\*y", "\u00e9\u{1F600}"].map(str)),
  uidText,
  fc.constantFrom(...ATTRS).map((a) => `context.${a}`),
  fc.constantFrom(...ATTRS).map((a) => `principal.${a}`),
  fc.constantFrom(...ATTRS).map((a) => `resource.${a}`),
);

function expr(depth: number): Gen {
  if (depth <= 0) return leafAny;
  const e = () => expr(depth - 1);
  return fc.oneof(
    { weight: 3, arbitrary: leafAny },
    fc
      .tuple(
        e(),
        fc.constantFrom("&&", "||", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "in"),
        e(),
      )
      .map(([a, op, b]) => `(${a} ${op} ${b})`),
    e().map((a) => `!(${a})`),
    e().map((a) => `-(${a})`),
    fc.tuple(e(), fc.constantFrom(...ATTRS)).map(([a, x]) => `(${a}).${x}`),
    fc.tuple(e(), fc.constantFrom(...ATTRS)).map(([a, x]) => `(${a}) has ${x}`),
    fc
      .tuple(e(), fc.constantFrom(...ATTRS), fc.constantFrom(...ATTRS))
      .map(([a, x, y]) => `(${a}) has ${x}.${y}`),
    fc
      .tuple(
        e(),
        fc.constantFrom('"a*"', '"*b*"', '"\\*"', '"x\\*y*"', '"*"', '""', '"\u00e9*"', '"**a"'),
      )
      .map(([a, p]) => `(${a}) like ${p}`),
    fc.tuple(e(), fc.constantFrom("User", "Group", "App")).map(([a, t]) => `(${a}) is ${t}`),
    fc
      .tuple(e(), fc.constantFrom("User", "Group"), uidText)
      .map(([a, t, u]) => `(${a}) is ${t} in ${u}`),
    fc.array(e(), { maxLength: 3 }).map((xs) => `[${xs.join(", ")}]`),
    fc.tuple(e(), e()).map(([a, b]) => `{f: ${a}, g: ${b}}`),
    fc.tuple(e(), e(), e()).map(([a, b, c]) => `(if ${a} then ${b} else ${c})`),
    fc
      .tuple(e(), fc.constantFrom("contains", "containsAll", "containsAny"), e())
      .map(([a, m, b]) => `(${a}).${m}(${b})`),
    e().map((a) => `(${a}).isEmpty()`),
    fc.tuple(e(), fc.constantFrom(...ATTRS)).map(([a, t]) => `(${a}).getTag(${str(t)})`),
    fc.tuple(e(), fc.constantFrom(...ATTRS)).map(([a, t]) => `(${a}).hasTag(${str(t)})`),
    fc.constantFrom(...IPS).map((x) => `ip(${str(x)})`),
    fc
      .tuple(e(), fc.constantFrom("isIpv4", "isIpv6", "isLoopback", "isMulticast"))
      .map(([a, m]) => `(${a}).${m}()`),
    fc
      .tuple(fc.constantFrom(...IPS), fc.constantFrom(...IPS))
      .map(([a, b]) => `ip(${str(a)}).isInRange(ip(${str(b)}))`),
    fc.tuple(e(), e()).map(([a, b]) => `(${a}).isInRange(${b})`),
    fc.constantFrom(...DECS).map((x) => `decimal(${str(x)})`),
    fc
      .tuple(
        e(),
        fc.constantFrom("lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"),
        e(),
      )
      .map(([a, m, b]) => `(${a}).${m}(${b})`),
    fc.constantFrom(...DTS).map((x) => `datetime(${str(x)})`),
    fc.constantFrom(...DURS).map((x) => `duration(${str(x)})`),
    fc.tuple(e(), e()).map(([a, b]) => `(${a}).offset(${b})`),
    fc.tuple(e(), e()).map(([a, b]) => `(${a}).durationSince(${b})`),
    fc
      .tuple(
        e(),
        fc.constantFrom(
          "toDate",
          "toTime",
          "toDays",
          "toHours",
          "toMinutes",
          "toSeconds",
          "toMilliseconds",
        ),
      )
      .map(([a, m]) => `(${a}).${m}()`),
  );
}

const scopeP = fc.oneof(
  fc.constant("principal"),
  fc.constantFrom(...USERS).map((u) => `principal == User::${str(u)}`),
  fc.constantFrom(...GROUPS).map((g) => `principal in Group::${str(g)}`),
  fc.constantFrom("principal is User", "principal is Group"),
  fc.constantFrom(...GROUPS).map((g) => `principal is User in Group::${str(g)}`),
);
const scopeA = fc.oneof(
  fc.constant("action"),
  fc.constantFrom(...ACTIONS).map((a) => `action == Action::${str(a)}`),
  fc
    .subarray(ACTIONS, { minLength: 1 })
    .map((as) => `action in [${as.map((a) => `Action::${str(a)}`).join(", ")}]`),
  fc.constant(`action in Action::"all"`),
);
const scopeR = fc.oneof(
  fc.constant("resource"),
  fc.constantFrom(...APPS).map((a) => `resource == App::${str(a)}`),
  fc.constantFrom(...GROUPS).map((g) => `resource in Group::${str(g)}`),
  fc.constant("resource is App"),
);

const policy = fc
  .tuple(
    fc.constantFrom("permit", "forbid"),
    scopeP,
    scopeA,
    scopeR,
    fc.array(fc.tuple(fc.constantFrom("when", "unless"), expr(3)), { maxLength: 2 }),
  )
  .map(
    ([eff, p, a, r, conds]) =>
      `${eff}(${p}, ${a}, ${r})${conds.map(([k, c]) => ` ${k} { ${c} }`).join("")};`,
  );

// ---- entity values (Cedar JSON) ----
const jsonLong = fc.oneof(
  fc.integer({ min: -5, max: 5 }),
  fc.constantFrom(Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 4611686018427, 3037000500),
);
const ext = (fn: string, xs: string[]) =>
  fc.constantFrom(...xs).map((arg) => ({ __extn: { fn, arg } }) as CedarValue);
const jsonEntityRef = fc
  .tuple(fc.constantFrom("User", "Group", "App"), fc.constantFrom("u0", "g1", "a0", "ghost"))
  .map(([type, id]) => ({ __entity: { type, id } }) as CedarValue);
const validIps = IPS.filter((x) => !["192.168.1.300", "01.2.3.4", "::ffff:1.2.3.4"].includes(x));
const jsonScalar: fc.Arbitrary<CedarValue> = fc.oneof(
  jsonLong,
  fc.string({ maxLength: 3 }),
  fc.boolean(),
  jsonEntityRef,
  ext("ip", validIps),
  ext("decimal", ["1.5", "-0.0001", "3.0"]),
  ext("datetime", ["2024-01-01", "2024-06-15T12:30:00Z"]),
  ext("duration", ["1h", "-1d2h", "1ms"]),
);
const jsonValue: fc.Arbitrary<CedarValue> = fc.oneof(
  { weight: 4, arbitrary: jsonScalar },
  fc.array(jsonScalar, { maxLength: 3 }),
  fc.dictionary(fc.constantFrom("f", "g", "n", "s"), jsonScalar, { maxKeys: 2 }),
);
const attrs = fc.dictionary(fc.constantFrom(...ATTRS.filter((a) => a !== "missing")), jsonValue, {
  maxKeys: 5,
});

const entities = fc
  .tuple(
    fc.array(
      fc.tuple(attrs, fc.subarray(GROUPS, { maxLength: 2 }), fc.option(attrs, { nil: undefined })),
      {
        minLength: USERS.length + GROUPS.length + APPS.length,
        maxLength: USERS.length + GROUPS.length + APPS.length,
      },
    ),
    fc.boolean(),
  )
  .map(([specs, chain]) => {
    const uids = [
      ...USERS.map((id) => ({ type: "User", id })),
      ...GROUPS.map((id) => ({ type: "Group", id })),
      ...APPS.map((id) => ({ type: "App", id })),
    ];
    const list: CedarEntity[] = uids.map((uid, i) => {
      const [a, parents, tags] = specs[i]!;
      let ps = parents.map((g) => ({ type: "Group", id: g }));
      if (uid.type === "Group") {
        // Deep hierarchies (optionally the chain g0 → g1 → … → g4); edges only go up, so
        // the graph stays acyclic as Cedar requires.
        const n = Number(uid.id.slice(1));
        ps =
          chain && n < GROUPS.length - 1
            ? [{ type: "Group", id: `g${n + 1}` }]
            : ps.filter((p) => Number(p.id.slice(1)) > n);
      }
      const e: CedarEntity = { uid, attrs: a, parents: ps };
      if (tags) e.tags = tags;
      return e;
    });
    for (const a of ACTIONS) {
      list.push({
        uid: { type: "Action", id: a },
        attrs: {},
        parents: a === "admin" ? [] : [{ type: "Action", id: "all" }],
      });
    }
    list.push({ uid: { type: "Action", id: "all" }, attrs: {}, parents: [] });
    return list;
  });

const request = fc.record({
  principal: fc.oneof(
    fc.constantFrom(...USERS, "ghost").map((id) => ({ type: "User", id })),
    fc.constantFrom(...GROUPS).map((id) => ({ type: "Group", id })),
  ),
  action: fc.constantFrom(...ACTIONS).map((id) => ({ type: "Action", id })),
  resource: fc.oneof(
    fc.constantFrom(...APPS).map((id) => ({ type: "App", id })),
    fc.constantFrom(...GROUPS).map((id) => ({ type: "Group", id })),
  ),
  context: attrs,
});

function reference(texts: string[], ents: CedarEntity[], req: AuthorizationRequest) {
  const staticPolicies: Record<string, string> = {};
  texts.forEach((t, i) => (staticPolicies[`p${i}`] = t));
  const ans = cedar.isAuthorized({
    principal: req.principal,
    action: req.action,
    resource: req.resource,
    context: req.context,
    policies: { staticPolicies },
    entities: ents,
  });
  if (ans.type !== "success") return undefined;
  return {
    decision: ans.response.decision,
    reasons: [...ans.response.diagnostics.reason].sort(),
    errors: [...new Set(ans.response.diagnostics.errors.map((e) => e.policyId))].sort(),
  };
}

function parses(text: string): boolean {
  const r = cedar.policySetTextToParts(text);
  return r.type === "success" && r.policies.length === 1;
}

describe("compiled engine vs cedar-wasm (differential)", () => {
  it("agrees on decision, determining policies and errors", () => {
    let compared = 0;
    const outcomes = { allow: 0, deny: 0, errors: 0 };
    fc.assert(
      fc.property(
        fc.array(policy, { minLength: 1, maxLength: 4 }),
        entities,
        fc.array(request, { minLength: 1, maxLength: 4 }),
        (texts, ents, reqs) => {
          fc.pre(texts.every(parses));
          const set = parsePolicies(
            texts.map((t, i) => ({ file: "gen.cedar", text: `@id("p${i}") ${t}` })),
            { schema: null },
          );
          const engine = createPolicyEngine("compiled", set);
          const store = new EntityStore(ents);
          for (const req of reqs) {
            const ref = reference(texts, ents, req);
            if (!ref) continue;
            const got = engine.authorize(req, store);
            const mine = {
              decision: got.decision,
              reasons: got.reasons,
              errors: [...new Set(got.errors.map((e) => e.policyId))].sort(),
            };
            expect(mine, JSON.stringify({ texts, req })).toEqual(ref);
            compared++;
            outcomes[ref.decision]++;
            if (ref.errors.length > 0) outcomes.errors++;
          }
        },
      ),
      { numRuns: Number(process.env["ZT_DIFF_RUNS"] ?? 400) },
    );
    // The generators must reach all outcomes, or the test proves little.
    expect(compared).toBeGreaterThan(100);
    expect(outcomes.allow).toBeGreaterThan(0);
    expect(outcomes.deny).toBeGreaterThan(0);
    expect(outcomes.errors).toBeGreaterThan(0);
  }, 900_000);

  it("agrees with the reference engine on zt verdicts for the same inputs", () => {
    fc.assert(
      fc.property(
        fc.array(policy, { minLength: 1, maxLength: 3 }),
        entities,
        request,
        (texts, ents, req) => {
          fc.pre(texts.every(parses));
          const set = parsePolicies(
            texts.map((t, i) => ({
              file: "gen.cedar",
              text: `@id("p${i}") ${i === 0 ? "@step_up " : ""}${t}`,
            })),
            { schema: null },
          );
          const store = new EntityStore(ents);
          const a = createPolicyEngine("compiled", set).authorize(req, store);
          const b = createPolicyEngine("reference", set).authorize(req, store);
          expect({ v: a.verdict, r: a.reason, d: a.reasons }).toEqual({
            v: b.verdict,
            r: b.reason,
            d: b.reasons,
          });
        },
      ),
      { numRuns: 150 },
    );
  }, 300_000);
});
