import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  canonicalHost,
  canonicalHostUncached,
  canonicalizeRequest,
  canonicalPath,
  canonicalPathGeneral,
} from "./canonical-request.js";

describe("canonicalPath", () => {
  const ok = (raw: string) => {
    const r = canonicalPath(raw);
    if (!r.ok) throw new Error(`${raw} refused: ${r.detail}`);
    return r.path;
  };
  const refused = (raw: string) => {
    const r = canonicalPath(raw);
    expect(r.ok, raw).toBe(false);
  };

  it("resolves dot segments and duplicate slashes", () => {
    expect(ok("/a/./b/../c")).toBe("/a/c");
    expect(ok("//a///b")).toBe("/a/b");
    expect(ok("/a/b/")).toBe("/a/b/");
    expect(ok("/")).toBe("/");
    expect(ok("/%61dmin")).toBe("/admin");
    expect(ok("/a/%2e%2e/b")).toBe("/b");
  });

  it("refuses what could mean different things to different hops", () => {
    for (const p of [
      "/a%2fb",
      "/a%5Cb",
      "/a\\b",
      "/a%00b",
      "/a;jsessionid=1",
      "/a%3bb",
      "/%252e%252e/admin",
      "/..",
      "/a/../..",
      "/a%zz",
      "/%c0%ae",
    ])
      refused(p);
  });

  it("is idempotent: canonicalising a canonical path changes nothing (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("a", "b", ".", "..", "", "%41", "x y", "é", "%2e"), {
          maxLength: 8,
        }),
        (segs) => {
          const r = canonicalPath("/" + segs.join("/"));
          if (!r.ok) return true;
          const again = canonicalPath(r.path);
          return again.ok && again.path === r.path;
        },
      ),
    );
  });
});

describe("canonicalizeRequest", () => {
  it("lowercases the host, drops a trailing dot and the port", () => {
    const r = canonicalizeRequest("/x?y=1", "WhoAmI.Example.:8443");
    expect(r).toEqual({ ok: true, host: "whoami.example", port: 8443, path: "/x", query: "?y=1" });
  });
  it("refuses an absolute-form URL naming another host than the Host header", () => {
    expect(canonicalizeRequest("http://admin.example/x", "whoami.example").ok).toBe(false);
    expect(canonicalizeRequest("http://whoami.example:9000/x", "whoami.example:8443").ok).toBe(
      false,
    );
    expect(canonicalizeRequest("http://user@whoami.example/x", "whoami.example").ok).toBe(false);
    expect(canonicalizeRequest("http://WHOAMI.example./x", "whoami.EXAMPLE:8443")).toMatchObject({
      ok: true,
      host: "whoami.example",
    });
    expect(canonicalizeRequest("http://whoami.example/x", "whoami.example")).toMatchObject({
      ok: true,
      path: "/x",
    });
  });
  it("refuses a missing or malformed Host", () => {
    expect(canonicalizeRequest("/", undefined).ok).toBe(false);
    expect(canonicalizeRequest("/", "a b").ok).toBe(false);
    expect(canonicalizeRequest("/", "evil.com@good.com").ok).toBe(false);
  });
});

describe("segment encoding fast path", () => {
  // The reference: encode everything, then restore the sub-delimiters zt keeps.
  const reference = (s: string) =>
    encodeURIComponent(s).replace(/%(40|3A|2C|2B|3D|24|26|21|27|28|29|2A)/g, (m) =>
      decodeURIComponent(m),
    );
  it("re-encodes a decoded segment exactly like the reference (differential property)", () => {
    const ch = fc.constantFrom(..."aZ09-_.!~*'()@:,+=$&é ?#[]\"<>^`{|}".split(""));
    fc.assert(
      fc.property(fc.array(ch, { minLength: 1, maxLength: 12 }), (chars) => {
        const seg = chars.join("").replace(/^\.+$/, "x");
        const r = canonicalPath("/" + encodeURIComponent(seg));
        return r.ok && r.path === "/" + reference(seg);
      }),
    );
  });
});

describe("canonicalPath fast path", () => {
  it("answers exactly as the general routine, for any path", () => {
    const piece = fc.constantFrom(
      "/",
      "//",
      ".",
      "..",
      "/./",
      "/../",
      "a",
      "Z9",
      "%41",
      "%2f",
      "%zz",
      ";",
      "\\",
      " ",
      "~",
      "'",
      "(",
      "*",
      "@:",
      ",+=$&",
      "é",
      "%C3%A9",
      "?",
      "#",
      "\u0000",
      "-_",
      "...",
    );
    const path = fc.oneof(
      fc.array(piece, { maxLength: 10 }).map((p) => "/" + p.join("")),
      fc.string({ maxLength: 20 }).map((s) => "/" + s),
      fc.string({ maxLength: 20 }),
    );
    fc.assert(
      fc.property(path, (p) => {
        expect(canonicalPath(p)).toEqual(canonicalPathGeneral(p));
      }),
      { numRuns: 20_000 },
    );
    for (const p of [
      "/",
      "/a",
      "/a/",
      "/a/b/",
      "/a/./b",
      "/a/../b",
      "/..",
      "/.",
      "/a/.",
      "/a/..",
      "/.../x",
    ])
      expect(canonicalPath(p)).toEqual(canonicalPathGeneral(p));
  });
});

describe("canonicalHost memo", () => {
  it("answers as the uncached routine, first time and from the memo, for any host", () => {
    const host = fc.oneof(
      fc.constantFrom("App.Example.", "app.example:8443", "[::1]:80", "[::1]x", "a:0", "a:99999"),
      fc.string({ maxLength: 30 }),
      fc.string({ minLength: 250, maxLength: 300 }),
    );
    fc.assert(
      fc.property(host, (h) => {
        const ref = canonicalHostUncached(h);
        expect(canonicalHost(h)).toEqual(ref);
        expect(canonicalHost(h)).toEqual(ref);
      }),
      { numRuns: 5_000 },
    );
    expect(canonicalHost(undefined)).toEqual(canonicalHostUncached(undefined));
    expect(Object.isFrozen(canonicalHost("app.example"))).toBe(true);
  });
});
