import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CidrSet } from "../core/cidr.js";
import { canonicalizeRequest } from "./canonical-request.js";
import { IncomingMessage } from "node:http";
import { Socket } from "node:net";
import {
  originalRequestHeaders,
  readOriginalRequest,
  resolveClientIp,
  type DistinctHeaders,
} from "./forwarded-headers.js";

/** What Caddy (X-Forwarded-*) and nginx (X-Original-*) send for GET http://app.example/admin/keys. */
const caddy = {
  "x-forwarded-method": ["GET"],
  "x-forwarded-proto": ["http"],
  "x-forwarded-host": ["app.example"],
  "x-forwarded-uri": ["/admin/keys"],
};
const nginx = {
  "x-original-url": ["http://app.example/admin/keys"],
  "x-original-method": ["GET"],
};

describe("readOriginalRequest", () => {
  it("reads nginx auth_request headers (X-Original-URL + X-Original-Method)", () => {
    const r = readOriginalRequest({
      "x-original-url": ["https://App.Example.:8443/a/c?x=1"],
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
      "x-forwarded-uri": ["/x/y?a=1"],
    });
    expect(r).toMatchObject({
      ok: true,
      request: { host: "app.example", path: "/x/y", query: "?a=1", style: "forward-auth" },
    });
  });

  // Caddy and Traefik copy every client header into the check and set X-Forwarded-*
  // themselves; nginx sets X-Original-* and passes a client's X-Forwarded-Uri on.
  it("stops a client choosing the URL decided on by adding the other convention's headers", () => {
    const forged = [
      { ...caddy, "x-original-url": ["http://app.example/public"], "x-original-method": ["GET"] },
      { ...caddy, "x-original-url": ["http://app.example/public"] },
      { ...caddy, "x-original-method": ["GET"] },
      { ...caddy, "x-original-url": [""] },
      { ...nginx, "x-forwarded-uri": ["/public"] },
      { ...nginx, "x-forwarded-method": ["GET"] },
      { ...nginx, "x-forwarded-host": ["other.example"] },
    ];
    for (const h of forged)
      expect(readOriginalRequest(h), JSON.stringify(h)).toMatchObject({
        ok: false,
        reason: "forwarded-conflict",
      });
    // What load balancers add to every request is not a conflict.
    expect(
      readOriginalRequest({
        ...nginx,
        "x-forwarded-proto": ["https"],
        "x-forwarded-for": ["203.0.113.7"],
      }),
    ).toMatchObject({ ok: true, request: { path: "/admin/keys", style: "auth-request" } });
    // Nor does X-Original-Method stand in for a missing X-Original-URL, or the reverse.
    expect(readOriginalRequest({ "x-original-method": ["GET"] })).toMatchObject({
      ok: false,
      reason: "forwarded-missing",
    });
  });

  // forward_auth.headers pinned to the front proxy's convention: the other one's headers,
  // which only a client can have added, are never read — not even to refuse the request.
  it("reads only the pinned convention, so a client's copies of the other cannot choose the URL", () => {
    const clientOriginal = [
      {},
      { "x-original-url": ["http://app.example/public"], "x-original-method": ["GET"] },
      { "x-original-url": ["http://other.example/public", "http://x/"] },
      { "x-original-method": ["DELETE"] },
    ];
    for (const extra of clientOriginal)
      expect(readOriginalRequest({ ...caddy, ...extra }, "x-forwarded")).toMatchObject({
        ok: true,
        request: { host: "app.example", path: "/admin/keys", method: "GET", style: "forward-auth" },
      });
    const clientForwarded = [
      {},
      { "x-forwarded-uri": ["/public"], "x-forwarded-method": ["GET"] },
      { "x-forwarded-host": ["other.example", "x"] },
      { "x-forwarded-proto": ["https, http"] },
    ];
    for (const extra of clientForwarded)
      expect(readOriginalRequest({ ...nginx, ...extra }, "x-original")).toMatchObject({
        ok: true,
        request: { host: "app.example", path: "/admin/keys", method: "GET", style: "auth-request" },
      });
    // The pinned convention's own headers missing: refused, naming the setting — the other
    // convention does not stand in for them.
    expect(readOriginalRequest(nginx, "x-forwarded")).toMatchObject({
      ok: false,
      reason: "forwarded-missing",
      detail: expect.stringContaining("forward_auth.headers: x-forwarded"),
    });
    expect(readOriginalRequest(caddy, "x-original")).toMatchObject({
      ok: false,
      reason: "forwarded-missing",
      detail: expect.stringContaining("forward_auth.headers: x-original"),
    });
    // Its own headers are held to the same rules as under "auto".
    expect(
      readOriginalRequest(
        { ...nginx, "x-original-url": ["http://a/x", "http://b/y"] },
        "x-original",
      ),
    ).toMatchObject({ ok: false, reason: "forwarded-duplicate" });
    expect(
      readOriginalRequest({ ...caddy, "x-forwarded-uri": ["/a/../admin"] }, "x-forwarded"),
    ).toMatchObject({ ok: false, reason: "path-not-canonical" });
    // "auto" still refuses the same mixes.
    expect(
      readOriginalRequest({ ...caddy, "x-original-url": ["http://app.example/public"] }, "auto"),
    ).toMatchObject({ ok: false, reason: "forwarded-conflict" });
  });

  // nginx, Caddy and HAProxy forward the URI as the client sent it, whatever zt decided on.
  it("stops a path that the proxy forwards in another form than the one decided on", () => {
    const refused = [
      "/admin/../public",
      "/admin/./../public",
      "/admin/%2e%2e/public",
      "/admin/%2E%2E/public",
      "/admin/.%2e/public",
      "//admin/..//public",
      "/public//x",
      "//",
      "/public/.",
      "/public/..",
      "/public/./x",
      "/%61dmin",
      "/admin%7e",
      "/a[1]",
      "/caf\u00e9",
    ];
    for (const path of refused) {
      for (const h of [
        { "x-original-url": [`http://app.example${path}?q=1`], "x-original-method": ["GET"] },
        {
          "x-forwarded-method": ["GET"],
          "x-forwarded-proto": ["http"],
          "x-forwarded-host": ["app.example"],
          "x-forwarded-uri": [path],
        },
      ])
        expect(readOriginalRequest(h), path).toMatchObject({
          ok: false,
          reason: "path-not-canonical",
        });
    }
    // Only the letter case of a %-escape may differ: both name the same bytes.
    for (const [path, canonical] of [
      ["/caf%c3%a9", "/caf%C3%A9"],
      ["/caf%C3%A9/", "/caf%C3%A9/"],
      ["/a%5bb%5D", "/a%5Bb%5D"],
      ["/", "/"],
      ["/a/b/", "/a/b/"],
    ] as const)
      expect(
        readOriginalRequest({
          "x-original-url": [`http://app.example${path}`],
          "x-original-method": ["GET"],
        }),
        path,
      ).toMatchObject({ ok: true, request: { path: canonical } });
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

  it("decides only on paths already canonical, and on them exactly as on a proxied request (differential property)", () => {
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
      "%c3%a9",
      "%7E",
      "[",
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
        // Forwarded as sent: decidable when canonical but for the case of %-escapes.
        const rawPath = "/" + segs.join("/");
        const decidable =
          proxied.ok && proxied.path === rawPath.replace(/%[0-9a-f]{2}/gi, (e) => e.toUpperCase());
        for (const r of [viaNginx, viaCaddy]) {
          if (r.ok !== decidable) return false;
          if (r.ok) {
            if (!proxied.ok || proxied.path !== r.request.path || proxied.query !== r.request.query)
              return false;
          } else if (proxied.ok && r.reason !== "path-not-canonical") return false;
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

describe("originalRequestHeaders (rawHeaders fast path)", () => {
  /** What Node's `headersDistinct` getter builds, by Node's own per-line routine. */
  function nodeDistinct(raw: string[]): DistinctHeaders {
    const msg = new IncomingMessage(new Socket()) as IncomingMessage & {
      _addHeaderLineDistinct(field: string, value: string, dest: Record<string, string[]>): void;
    };
    // Without a prototype: Node's getter starts from `{}`, so a header named `constructor`
    // (or any Object.prototype member) makes its own routine throw — a Node quirk the
    // rawHeaders path does not have, and not what this comparison is about.
    const dest = Object.create(null) as Record<string, string[]>;
    for (let i = 0; i + 1 < raw.length; i += 2)
      msg._addHeaderLineDistinct(raw[i]!, raw[i + 1]!, dest);
    return dest;
  }
  const NAMES = [
    "x-original-url",
    "x-original-method",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
  ];
  const name = fc.oneof(
    fc.constantFrom(...NAMES, "x-forwarded-for", "host", "cookie", "x-original-urls", "x-zt-x"),
    // The same names in any letter case.
    fc
      .tuple(fc.constantFrom(...NAMES), fc.array(fc.boolean(), { minLength: 18, maxLength: 18 }))
      .map(([n, up]) => [...n].map((c, i) => (up[i] ? c.toUpperCase() : c)).join("")),
    fc.string({ minLength: 1, maxLength: 20 }),
  );
  const value = fc.oneof(
    fc.constantFrom("GET", "https", "app.example", "/a/./b?x=1", "http://app.example/a", ""),
    fc.string({ maxLength: 30 }),
  );
  const rawHeaders = fc
    .array(fc.tuple(name, value), { maxLength: 12 })
    .map((pairs) => pairs.flatMap(([n, v]) => [n, v]));

  it("gives exactly headersDistinct's values for the six headers read, and the same answer", () => {
    fc.assert(
      fc.property(rawHeaders, (raw) => {
        const fast = originalRequestHeaders(raw);
        const ref = nodeDistinct(raw);
        for (const n of NAMES) expect(fast[n]).toEqual(ref[n]);
        expect(readOriginalRequest(fast)).toEqual(readOriginalRequest(ref));
      }),
      { numRuns: 2000 },
    );
  });

  it("keeps duplicates (refused), whatever their case", () => {
    const raw = ["X-Original-URL", "http://a.example/", "x-original-url", "http://b.example/"];
    expect(originalRequestHeaders(raw)["x-original-url"]).toEqual([
      "http://a.example/",
      "http://b.example/",
    ]);
    expect(
      readOriginalRequest(originalRequestHeaders([...raw, "X-Original-Method", "GET"])),
    ).toMatchObject({ ok: false, reason: "forwarded-duplicate" });
  });
});
