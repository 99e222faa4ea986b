import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { normaliseDnsName, parseSpiffeId, spiffeIdProblem } from "./spiffe-id.js";
import { parsePkiSettings } from "./pki-config.js";

// Cases from the SPIFFE-ID standard §2 (trust domain and path rules).
const VALID = [
  "spiffe://example.test",
  "spiffe://example.test/ns/web",
  "spiffe://a-b_c.d/Path/With.Dots/x-y_z",
  "spiffe://td/..a/a..",
];
const INVALID: [string, string][] = [
  ["https://example.test/x", "scheme-not-spiffe"],
  ["SPIFFE://example.test/x", "scheme-not-spiffe"],
  ["spiffe://", "trust-domain-empty"],
  ["spiffe:///x", "trust-domain-empty"],
  ["spiffe://Example.test/x", "trust-domain-invalid-characters"],
  ["spiffe://example.test:8443/x", "trust-domain-invalid-characters"],
  ["spiffe://user@example.test/x", "trust-domain-invalid-characters"],
  ["spiffe://example.test/", "path-segment-empty"],
  ["spiffe://example.test/a//b", "path-segment-empty"],
  ["spiffe://example.test/a/", "path-segment-empty"],
  ["spiffe://example.test/./a", "path-segment-dot"],
  ["spiffe://example.test/a/..", "path-segment-dot"],
  ["spiffe://example.test/a?b=c", "path-invalid-characters"],
  ["spiffe://example.test/a#frag", "path-invalid-characters"],
  ["spiffe://example.test/a%20b", "path-invalid-characters"],
  ["spiffe://example.test/" + "a".repeat(2100), "too-long"],
];

describe("SPIFFE ID syntax (SPIFFE-ID §2)", () => {
  it.each(VALID)("accepts %s", (id) => {
    expect(spiffeIdProblem(id)).toBeNull();
    expect(parseSpiffeId(id).uri).toBe(id);
  });
  it.each(INVALID)("refuses %s (%s)", (id, reason) => {
    expect(spiffeIdProblem(id)).toBe(reason);
    expect(() => parseSpiffeId(id)).toThrow(
      expect.objectContaining({ code: "ZT_PKI_SPIFFE_ID_INVALID" }),
    );
  });
  it("agrees with the WHATWG URL parser on what it accepts: scheme, host and path round-trip", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (tail) => {
        const id = `spiffe://example.test/${tail}`;
        if (spiffeIdProblem(id) !== null) return;
        const u = new URL(id);
        expect(u.host).toBe("example.test");
        expect(u.pathname).toBe(`/${tail}`);
        expect(u.search + u.hash).toBe("");
      }),
      { numRuns: 500 },
    );
  });
});

describe("DNS names in certificates", () => {
  it("lowercases names and accepts a leftmost wildcard and digit labels below the top", () => {
    expect(normaliseDnsName("Web.Example.Test.")).toBe("web.example.test");
    expect(normaliseDnsName("*.svc.example.test")).toBe("*.svc.example.test");
    expect(normaliseDnsName("10-0-0-1.nip.example")).toBe("10-0-0-1.nip.example");
    expect(normaliseDnsName("123.example.test")).toBe("123.example.test");
  });

  it("refuses a name whose last label is all digits: 999.1.1.1 is a mistyped address, not a host name (RFC 1123 §2.1)", () => {
    for (const bad of ["999.1.1.1", "10.0.0", "1.2.3.4.5", "12345", "web.example.123"]) {
      expect(() => normaliseDnsName(bad), bad).toThrow(
        /not a valid DNS name: .*last label is all digits/,
      );
    }
  });
});

describe("pki config section", () => {
  it("defaults: 1h SVIDs up to 24h, 8h SSH certificates", () => {
    const s = parsePkiSettings(undefined, "example.test");
    expect(s.svidTtlMs).toBe(3_600_000);
    expect(s.svidMaxTtlMs).toBe(86_400_000);
    expect(s.sshUserTtlMs).toBe(8 * 3_600_000);
  });
  it.each([
    [{ svid_ttl: "2d" }, /^pki\.svid_max_ttl|^pki\.svid_ttl/],
    [{ svid_max_ttl: "48h" }, /^pki\.svid_max_ttl: expected a duration above 0 and at most 24h/],
    [{ svid_ttl: "soon" }, /pki\.svid_ttl: expected a duration/],
    [{ ssh: { max_ttl: "30h" } }, /^pki\.ssh\.max_ttl/],
    [{ typo: 1 }, /^pki: unknown key\(s\) typo/],
  ])("refuses %j naming the key", (raw, message) => {
    expect(() => parsePkiSettings(raw, "example.test")).toThrow(message);
  });
});
