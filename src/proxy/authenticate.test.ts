import { describe, expect, it } from "vitest";
import { assertionClaims, assertionSubject, type Authenticated } from "./authenticate.js";

describe("assertionClaims", () => {
  it("is { ...assertionSubject(a), aud, decisionId } for users and services", () => {
    const user: Authenticated = {
      session: {
        id: "ses_1",
        userId: "u1",
        createdAt: 0,
        expiresAt: 1,
        lastSeenAt: 0,
        mfaAt: null,
        sourceIp: "127.0.0.1",
        userAgent: "t",
        deviceId: null,
        revokedAt: null,
        revokeReason: null,
      },
      user: { id: "u1", name: "alice", email: "a@example.test", groups: ["eng"], disabled: false },
    } as unknown as Authenticated;
    const noEmail = {
      ...user,
      user: { ...(user as { user: object }).user, email: null },
    } as unknown as Authenticated;
    const service: Authenticated = {
      kind: "service",
      spiffeId: "spiffe://t/svc",
      serial: "01",
      notAfterMs: 1,
    };
    for (const a of [user, noEmail, service]) {
      const claims = assertionClaims(a, "app", "dec_1");
      expect(claims).toStrictEqual({ ...assertionSubject(a), aud: "app", decisionId: "dec_1" });
      expect(Object.keys(claims).sort()).toEqual(
        Object.keys({ ...assertionSubject(a), aud: "app", decisionId: "dec_1" }).sort(),
      );
    }
  });
});
