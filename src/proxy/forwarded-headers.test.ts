import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CidrSet } from "../core/cidr.js";
import { canonicalizeRequest } from "./canonical-request.js";
import { readOriginalRequest, resolveClientIp } from "./forwarded-headers.js";

describe("readOriginalRequest", () => {
  it("reads nginx auth_request headers (X-Original-URL + X-Original-Method)", () => {
    const r = readOriginalRequest({
      "x-original-url": ["https://App.Example.:8443/a/./b/../c?x=1"],
      "x-original-method": ["POST"],
    });
    expect(r).toEqual({
      ok: true,
      request: {
        method: "POST",
        proto: "https",
        host: "app.example",
        port: 8443,
        path: "/a/c",
        query: "?x=1",
        style: "auth-request",
      },
    });
  });

  it("reads Caddy/Traefik headers (X-Forwarded-Method/Proto/Host/Uri)", () => {
    const r = readOriginalRequest({
      "x-forwarded-method": ["GET"],
      "x-forwarded-proto": ["http"],
      "x-forwarded-host": ["app.example"],
      "x-forwarded-uri": ["/x//y"],
    });
    expect(r).toMatchObject({
      ok: true,
      request: { host: "app.example", path: "/x/y", style: "forward-auth" },
    });
  });

  it("refuses what it cannot read unambiguously", () => {
    const bad = [
      {},
      { "x-original-url": ["https://a.example/"] },
      {
        "x-original-url": ["https://a.example/", "https://b.example/"],
        "x-original-method": ["GET"],
      },
      { "x-original-url": ["/relative"], "x-original-method": ["GET"] },
      { "x-original-url": ["https://a.example/%2f"], "x-original-method": ["GET"] },
      { "x-original-url": ["https://a.example/"], "x-original-method": ["G T"] },
      {
        "x-forwarded-method": ["GET"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["a.example"],
      },
      {
        "x-forwarded-method": ["GET"],
        "x-forwarded-proto": ["https, http"],
        "x-forwarded-host": ["a.example"],
        "x-forwarded-uri": ["/"],
      },
    ];
    for (const h of bad) expect(readOriginalRequest(h).ok, JSON.stringify(h)).toBe(false);
  });

  it("canonicalises exactly like a proxied request (differential property)", () => {
    const seg = fc.constantFrom(
      "a",
      "B",
      ".",
      "..",
      "",
      "%41",
      "%2e",
      "%2F",
      ";x",
      "\\",
      "%252e",
      "é",
      "%zz",
    );
    fc.assert(
      fc.property(fc.array(seg, { maxLength: 6 }), fc.constantFrom("", "?q=1"), (segs, q) => {
        const target = "/" + segs.join("/") + q;
        const proxied = canonicalizeRequest(target, "app.example");
        const viaNginx = readOriginalRequest({
          "x-original-url": [`http://app.example${target}`],
          "x-original-method": ["GET"],
        });
        const viaCaddy = readOriginalRequest({
          "x-forwarded-method": ["GET"],
          "x-forwarded-proto": ["http"],
          "x-forwarded-host": ["app.example"],
          "x-forwarded-uri": [target],
        });
        for (const r of [viaNginx, viaCaddy]) {
          if (proxied.ok !== r.ok) return false;
          if (
            proxied.ok &&
            r.ok &&
            (proxied.path !== r.request.path || proxied.query !== r.request.query)
          )
            return false;
        }
        return true;
      }),
    );
  });
});

describe("resolveClientIp", () => {
  const trusted = new CidrSet(["127.0.0.1/32", "10.0.0.0/8"]);
  it("uses the peer when it is not a trusted proxy", () => {
    expect(resolveClientIp("203.0.113.5", "1.2.3.4", trusted)).toBe("203.0.113.5");
  });
  it("takes the right-most untrusted X-Forwarded-For entry from a trusted proxy", () => {
    expect(resolveClientIp("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", trusted)).toBe(
      "198.51.100.7",
    );
    expect(resolveClientIp("::ffff:127.0.0.1", ["198.51.100.7"], trusted)).toBe("198.51.100.7");
    expect(resolveClientIp("127.0.0.1", "[2001:db8::1]:443", trusted)).toBe("2001:db8::1");
    expect(resolveClientIp("127.0.0.1", "garbage, 10.0.0.1", trusted)).toBe("10.0.0.1");
    expect(resolveClientIp("127.0.0.1", undefined, trusted)).toBe("127.0.0.1");
  });
});
