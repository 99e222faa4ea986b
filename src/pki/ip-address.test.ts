import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { BlockList } from "node:net";
import { canonicalIpAddress, formatIpAddress, ipAddressBytes } from "./ip-address.js";

/**
 * Any RFC 4291 §2.2 text form of 16 octets: hex groups in random case with optional
 * leading zeros, optionally the low 32 bits as a dotted quad, optionally one run of
 * zero groups written as `::`.
 */
const ipv6Form = fc
  .record({
    groups: fc.array(
      fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })),
      {
        minLength: 8,
        maxLength: 8,
      },
    ),
    dotted: fc.boolean(),
    run: fc.nat(),
    cut: fc.nat(),
    upper: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
    pad: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 8, maxLength: 8 }),
  })
  .map(({ groups, dotted, run, cut, upper, pad }) => {
    const bytes = Buffer.alloc(16);
    groups.forEach((g, i) => bytes.writeUInt16BE(g, i * 2));
    const hexCount = dotted ? 6 : 8;
    const parts = groups.slice(0, hexCount).map((g, i) => {
      const h = g.toString(16).padStart(Math.min(4, g.toString(16).length + pad[i]!), "0");
      return upper[i] ? h.toUpperCase() : h;
    });
    // Zero runs among the hex groups; pick one (or none) and a non-empty slice of it.
    const runs: [number, number][] = [];
    for (let i = 0; i < hexCount;) {
      if (groups[i] !== 0) {
        i++;
        continue;
      }
      let j = i;
      while (j < hexCount && groups[j] === 0) j++;
      runs.push([i, j]);
      i = j;
    }
    const chosen = runs[run % (runs.length + 1)];
    const tail = dotted ? [...bytes.subarray(12)].join(".") : undefined;
    let text: string;
    if (!chosen) {
      text = [...parts, ...(tail ? [tail] : [])].join(":");
    } else {
      const [s, e] = chosen;
      const len = 1 + (cut % (e - s));
      const start = s + (Math.floor(cut / (e - s)) % (e - s - len + 1));
      const before = parts.slice(0, start).join(":");
      const after = [...parts.slice(start + len), ...(tail ? [tail] : [])].join(":");
      text = `${before}::${after}`;
    }
    return { text, bytes };
  });

describe("IP addresses in certificates (RFC 4291 §2.2 text, RFC 5952 §4 canonical form)", () => {
  it("parses every IPv6 text form to its octets; the canonical form matches WHATWG URL's and BlockList sees the same address", () => {
    fc.assert(
      fc.property(ipv6Form, ({ text, bytes }) => {
        expect(ipAddressBytes(text)?.toString("hex")).toBe(bytes.toString("hex"));
        const canonical = canonicalIpAddress(text);
        // References: the URL host parser (ada) and libuv's inet_pton (BlockList).
        expect(canonical).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
        const list = new BlockList();
        list.addAddress(text, "ipv6");
        expect(list.check(canonical!, "ipv6")).toBe(true);
        expect(ipAddressBytes(canonical!)?.equals(bytes)).toBe(true);
        // A zone index has no place in a SAN.
        expect(ipAddressBytes(`${text}%eth0`)).toBeUndefined();
      }),
      { numRuns: 2000 },
    );
  });

  it("stops an embedded dotted IPv4 part from being read as hex (review repro addresses)", () => {
    const cases: [string, string][] = [
      ["::ffff:10.0.0.1", "00000000000000000000ffff0a000001"],
      ["::1.2.3.4", "00000000000000000000000001020304"],
      ["64:ff9b::192.0.2.33", "0064ff9b0000000000000000c0000221"],
      ["::FFFF:A00:1", "00000000000000000000ffff0a000001"],
    ];
    for (const [text, hex] of cases) expect(ipAddressBytes(text)?.toString("hex")).toBe(hex);
    expect(canonicalIpAddress("::ffff:10.0.0.1")).toBe("::ffff:a00:1");
  });

  it("refuses what is not an address a certificate can hold", () => {
    for (const bad of [
      "",
      "1.2.3",
      "01.2.3.4",
      "1.2.3.256",
      "::ffff:1.2.3.256",
      "1:2:3:4:5:6:7:8:9",
      ":::",
      "1::2::3",
      "fe80::1%eth0",
      "::1.2.3.4:5",
      "web.internal",
    ]) {
      expect(ipAddressBytes(bad), bad).toBeUndefined();
    }
    expect(formatIpAddress(Buffer.alloc(5))).toBeUndefined();
    expect(canonicalIpAddress("10.0.0.1")).toBe("10.0.0.1");
  });
});
