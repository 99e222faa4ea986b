import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  isSameOriginRequest,
  originMatches,
  parseOrigin,
  serializeOrigin,
  webSocketOriginAllowed,
  type RequestOrigin,
} from "./same-origin.js";

const DEFAULT: Record<string, number> = { http: 80, https: 443 };

/**
 * Reference: the WHATWG URL parser's serialised origin, compared with the origin the
 * request arrived on (RFC 6454 §5). The input must itself be a serialised origin (no
 * path, query, fragment or userinfo), and one trailing dot is dropped as zt's Host
 * canonicalisation drops it.
 */
function reference(origin: string, t: RequestOrigin): boolean {
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  if (u.origin === "null" || `${u.origin}/` !== u.href || origin.endsWith("/")) return false;
  const scheme = u.protocol.slice(0, -1);
  if (t.secure && scheme !== "https") return false;
  const port = u.port === "" ? DEFAULT[scheme] : Number(u.port);
  return u.hostname.replace(/\.$/, "") === t.host && port === (t.port ?? DEFAULT[scheme]);
}

const hosts = ["a.example", "b.example", "app.localhost", "[::1]", "10.0.0.1"];
const portText = fc.oneof(
  fc.constant(""),
  fc.constantFrom(":80", ":443", ":8443", ":8080", ":0443", ":080"),
);
/** Upper-cases some letters of a string. */
const recased = (s: string) =>
  fc
    .array(fc.boolean(), { minLength: s.length, maxLength: s.length })
    .map((up) => [...s].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(""));
const target = fc.record({
  host: fc.constantFrom(...hosts),
  port: fc.constantFrom(undefined, 80, 443, 8443, 8080),
  secure: fc.boolean(),
});

describe("originMatches", () => {
  it("treats a default port as no port, ignores case and one trailing dot", () => {
    const cases: [string, RequestOrigin, boolean][] = [
      ["https://a.example", { host: "a.example", port: 443, secure: true }, true],
      ["https://a.example:443", { host: "a.example", port: undefined, secure: true }, true],
      ["http://x.example", { host: "x.example", port: 80, secure: false }, true],
      ["http://x.example:80", { host: "x.example", port: undefined, secure: false }, true],
      ["HTTPS://A.Example.", { host: "a.example", port: undefined, secure: true }, true],
      ["http://[::1]:8080", { host: "[::1]", port: 8080, secure: false }, true],
      // A Host without a port is the scheme's default port, not any port.
      ["https://a.example:8443", { host: "a.example", port: undefined, secure: true }, false],
      ["https://a.example", { host: "a.example", port: 8443, secure: true }, false],
      ["http://a.example:443", { host: "a.example", port: undefined, secure: false }, false],
      // Over https, an http page is another origin.
      ["http://a.example:443", { host: "a.example", port: 443, secure: true }, false],
      ["https://b.example", { host: "a.example", port: undefined, secure: true }, false],
    ];
    for (const [o, t, want] of cases)
      expect(originMatches(o, t), `${o} ${JSON.stringify(t)}`).toBe(want);
  });

  it("refuses anything that is not a serialised http(s) origin", () => {
    const t: RequestOrigin = { host: "a.example", port: undefined, secure: true };
    for (const o of [
      "null",
      "",
      "https://a.example/",
      "https://a.example/path",
      "https://a.example?x",
      "https://a.example#x",
      "https://user@a.example",
      "https://a.example:",
      "https://a.example:99999",
      "https://a.example..",
      "https://a%2eexample",
      "https://a.example https://a.example",
      "https://a.example, https://a.example",
      " https://a.example",
      "ws://a.example",
      "file:///etc/passwd",
      "https://a.example\\",
      "https://ä.example",
    ])
      expect(originMatches(o, t), o).toBe(false);
  });

  it("agrees with the WHATWG URL parser's origin on generated origins (property)", () => {
    const origin = fc
      .tuple(fc.constantFrom("http", "https"), fc.constantFrom(...hosts), fc.boolean(), portText)
      .chain(([scheme, host, dot, port]) =>
        recased(`${scheme}://${host}${dot && !host.startsWith("[") ? "." : ""}`).map(
          (s) => s + port,
        ),
      );
    fc.assert(
      fc.property(origin, target, (o, t) => {
        expect(originMatches(o, t), o).toBe(reference(o, t));
      }),
      { numRuns: 2000 },
    );
  });

  it("never throws and never accepts a URL with a path, query or fragment (property)", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.webUrl({ withQueryParameters: true })),
        target,
        (o, t) => {
          const r = originMatches(o, t);
          if (r) expect(o).toMatch(/^https?:\/\/[^/?#@]+$/i);
          expect(r).toBe(reference(o, t) && !/%/.test(o));
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("isSameOriginRequest", () => {
  const t: RequestOrigin = { host: "a.example", port: undefined, secure: true };
  it("without an Origin, goes by Sec-Fetch-Site (absent, same-origin or none)", () => {
    const check = (secFetchSite: string | undefined) =>
      isSameOriginRequest({ origin: undefined, secFetchSite }, t);
    expect([undefined, "same-origin", "none"].map(check)).toEqual([true, true, true]);
    expect(["same-site", "cross-site", "bogus"].map(check)).toEqual([false, false, false]);
  });
  it("without an Origin, a Referer must be a URL on this origin (a missing one is not a refusal)", () => {
    const check = (referer: string | undefined) =>
      isSameOriginRequest({ origin: undefined, secFetchSite: undefined, referer }, t);
    for (const ok of [undefined, "https://a.example/.zt/login?rd=%2F", "HTTPS://A.Example:443/x"])
      expect(check(ok), String(ok)).toBe(true);
    for (const bad of [
      "https://evil.example/",
      "http://a.example/", // https here: an http page may not post
      "https://a.example:8443/",
      "https://user@a.example/",
      "ftp://a.example/",
      "/relative",
      "",
      "null",
    ])
      expect(check(bad), bad).toBe(false);
    // Sec-Fetch-Site still has its say.
    expect(
      isSameOriginRequest(
        { origin: undefined, secFetchSite: "cross-site", referer: "https://a.example/" },
        t,
      ),
    ).toBe(false);
  });
  it("with an Origin, goes by the Origin alone", () => {
    expect(
      isSameOriginRequest({ origin: "https://a.example:443", secFetchSite: "cross-site" }, t),
    ).toBe(true);
    expect(
      isSameOriginRequest({ origin: "https://evil.example", secFetchSite: "same-origin" }, t),
    ).toBe(false);
  });
});

describe("webSocketOriginAllowed", () => {
  const t: RequestOrigin = { host: "chat.example", port: undefined, secure: true };
  const listed = ["https://app.example", "http://dev.example:8080"];

  it("allows the request's own origin and the listed ones, default ports equal to none", () => {
    for (const o of [
      "https://chat.example",
      "https://chat.example:443",
      "https://app.example",
      "HTTPS://App.Example:443",
      "http://dev.example:8080",
    ])
      expect(webSocketOriginAllowed(o, t, listed), o).toBe(true);
  });

  it("refuses every other origin, the null origin and anything not an origin", () => {
    for (const o of [
      "https://evil.example",
      "https://sub.chat.example",
      "http://chat.example",
      "https://app.example:8443",
      "http://app.example",
      "https://dev.example:8080",
      "null",
      "",
      "https://app.example/",
      "https://app.example, https://evil.example",
    ])
      expect(webSocketOriginAllowed(o, t, listed), o).toBe(false);
    expect(webSocketOriginAllowed("https://app.example", t, undefined)).toBe(false);
  });

  it("agrees with the WHATWG URL parser's origin on generated origins and lists (property)", () => {
    const origin = fc
      .tuple(fc.constantFrom("http", "https"), fc.constantFrom(...hosts), portText)
      .chain(([scheme, host, port]) => recased(`${scheme}://${host}`).map((s) => s + port));
    fc.assert(
      fc.property(origin, target, fc.array(origin, { maxLength: 3 }), (o, tt, list) => {
        const allowed = list.map((l) => serializeOrigin(parseOrigin(l)!));
        const want = reference(o, tt) || list.some((l) => new URL(l).origin === new URL(o).origin);
        expect(webSocketOriginAllowed(o, tt, allowed), `${o} ${list.join(" ")}`).toBe(want);
      }),
      { numRuns: 2000 },
    );
  });
});
