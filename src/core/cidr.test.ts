import { describe, expect, it } from "vitest";
import { CidrSet, parseCidr } from "./cidr.js";

describe("parseCidr", () => {
  it("reads addresses and prefixes of both families", () => {
    expect(parseCidr("10.0.0.0/8")).toEqual({ address: "10.0.0.0", bits: 8, family: "ipv4" });
    expect(parseCidr("192.0.2.7")).toEqual({ address: "192.0.2.7", bits: 32, family: "ipv4" });
    expect(parseCidr("2001:db8::/32")).toEqual({ address: "2001:db8::", bits: 32, family: "ipv6" });
    expect(parseCidr("::1")).toEqual({ address: "::1", bits: 128, family: "ipv6" });
    expect(parseCidr("0.0.0.0/0")?.bits).toBe(0);
  });

  it("refuses anything that is not exactly an address with an optional decimal prefix", () => {
    for (const bad of [
      "10.0.0.1/", // Number("") is 0: this once trusted every address
      "10.0.0.0/8/9",
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/ 8",
      "10.0.0.0/8.0",
      "10.0.0.0/1e1",
      "10.0.0.0/-1",
      "10.0.0.0/0008",
      "/8",
      "",
      "example.com/8",
    ])
      expect(parseCidr(bad), bad).toBeUndefined();
  });
});

describe("CidrSet", () => {
  it("matches members only, IPv4-mapped IPv6 as IPv4", () => {
    const set = new CidrSet(["10.0.0.0/8", "2001:db8::/32"]);
    expect(set.has("10.1.2.3")).toBe(true);
    expect(set.has("::ffff:10.1.2.3")).toBe(true);
    expect(set.has("11.0.0.1")).toBe(false);
    expect(set.has("2001:db8::1")).toBe(true);
    expect(set.has("2001:db9::1")).toBe(false);
    expect(set.has("not-an-ip")).toBe(false);
  });

  it("throws a config error naming the entry", () => {
    expect(() => new CidrSet(["10.0.0.1/"], "trusted_proxies")).toThrow(
      /trusted_proxies: "10\.0\.0\.1\/" is not an IP address or CIDR/,
    );
  });
});
