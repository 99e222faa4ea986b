/**
 * The example policies in examples/policies load under zt's schema (strict validation,
 * via loadPolicySet) and decide the seed patterns as documented, on both engines:
 * business hours, MFA ≤ 4 h + managed device with score > 80 for production,
 * restricted resources only with an approved grant, SSH to a host group only with a
 * grant for it, break-glass.
 */
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import {
  createPolicyEngine,
  EntityStore,
  httpContext,
  loadPolicySet,
  type HttpContextInput,
  type PolicyEngineKind,
} from "../src/policy/index.js";
import { createPolicySshAuthorizer } from "../src/pki/index.js";
import { ROOT } from "./helpers/zt-process.js";

const set = loadPolicySet(join(ROOT, "examples", "policies"));
const entities = new EntityStore([
  {
    uid: { type: "User", id: "alice" },
    attrs: { name: "alice" },
    parents: [{ type: "Group", id: "eng" }],
  },
  {
    uid: { type: "User", id: "olga" },
    attrs: { name: "olga" },
    parents: [{ type: "Group", id: "ops" }],
  },
  { uid: { type: "Group", id: "eng" }, attrs: {}, parents: [] },
  { uid: { type: "Group", id: "ops" }, attrs: {}, parents: [] },
]);

const base: HttpContextInput = {
  sourceIp: "10.0.0.5",
  host: "x.test",
  path: "/",
  mfaAgeSeconds: 60,
  timeMs: Date.UTC(2026, 2, 2, 10),
  authenticatedBy: "session",
  localHour: 10,
};

describe.each(["compiled", "reference"] as PolicyEngineKind[])(
  "example policies (%s engine)",
  (kind) => {
    const engine = createPolicyEngine(kind, set);
    const decide = (
      user: string,
      app: string,
      ctx: Partial<HttpContextInput> = {},
      action = "GET",
    ) =>
      engine.authorize(
        {
          principal: { type: "User", id: user },
          action: { type: "Action", id: action },
          resource: { type: "App", id: app },
          context: httpContext({ ...base, ...ctx }),
        },
        entities,
      );

    it("business hours: hr is open 08–17 only", () => {
      expect(decide("alice", "hr", { localHour: 8 }).verdict).toBe("allow");
      expect(decide("alice", "hr", { localHour: 17 }).verdict).toBe("allow");
      expect(decide("alice", "hr", { localHour: 18 }).verdict).toBe("deny");
      expect(decide("alice", "hr", { localHour: 7 }).verdict).toBe("deny");
    });

    it("production: managed device with score > 80, MFA within 4 h (else step-up)", () => {
      const good = { device: { compliant: true, score: 90 } };
      expect(decide("olga", "production", good).verdict).toBe("allow");
      expect(decide("olga", "production", { device: { compliant: true, score: 80 } }).verdict).toBe(
        "deny",
      );
      expect(
        decide("olga", "production", { device: { compliant: false, score: 100 } }).verdict,
      ).toBe("deny");
      expect(decide("olga", "production", {}).verdict).toBe("deny");
      expect(decide("alice", "production", good).verdict).toBe("deny");
      const old = decide("olga", "production", { ...good, mfaAgeSeconds: 4 * 3600 + 1 });
      expect(old.verdict).toBe("step-up");
      expect(old.reason).toBe("mfa-too-old");
      expect(
        decide("olga", "production", { ...good, newNetwork: true, mfaAgeSeconds: 600 }).verdict,
      ).toBe("step-up");
      expect(
        decide("olga", "production", { ...good, failedAttempts: 3, mfaAgeSeconds: 600 }).verdict,
      ).toBe("step-up");
      expect(
        decide("olga", "production", { ...good, newNetwork: true, mfaAgeSeconds: 60 }).verdict,
      ).toBe("allow");
    });

    it("restricted: db-admin only with an active grant for it", () => {
      expect(decide("alice", "db-admin").verdict).toBe("deny");
      expect(decide("alice", "db-admin", { grants: ["payroll"] }).verdict).toBe("deny");
      expect(decide("alice", "db-admin", { grants: ["db-admin"] }).verdict).toBe("allow");
    });

    it("ssh: the prod host group only with an active grant for it, or break-glass", async () => {
      const ssh = createPolicySshAuthorizer(() => engine);
      const ask = async (grants: string[], breakglass = false) =>
        (
          await ssh({
            user: "alice",
            groups: ["eng"],
            hostGroup: "prod",
            principals: ["alice"],
            ttlSeconds: 3600,
            sourceAddresses: [],
            forceCommand: undefined,
            extensions: [],
            sourceIp: undefined,
            nowMs: base.timeMs,
            grants,
            breakglass,
          })
        ).allowed;
      expect(await ask([])).toBe(false);
      expect(await ask(["staging"])).toBe(false);
      expect(await ask(["prod"])).toBe(true);
      expect(await ask([], true)).toBe(true);
    });

    it("break-glass opens whatever resource the grant names (context.breakglass)", () => {
      expect(decide("olga", "db-admin", { breakglass: true }, "POST").verdict).toBe("allow");
      expect(decide("olga", "db-admin", {}, "POST").verdict).toBe("deny");
    });
  },
);
