import { describe, expect, it } from "vitest";
import {
  assertionClaims,
  assertionSubject,
  cookieCount,
  type Authenticated,
} from "./authenticate.js";

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

describe("cookieCount", () => {
  it("counts a name's cookies exactly, across pairs and headers", () => {
    expect(cookieCount(undefined, "zt_session")).toBe(0);
    expect(cookieCount("a=1; zt_session=x", "zt_session")).toBe(1);
    expect(cookieCount("zt_session=x;zt_session=y; b=2", "zt_session")).toBe(2);
    expect(cookieCount(["zt_session=x", "a=1; zt_session=y"], "zt_session")).toBe(2);
    // Other names that contain it, and values that do, are not it.
    expect(cookieCount("my_zt_session=x; zt_sessions=y; a=zt_session=z", "zt_session")).toBe(0);
  });
});
