import { describe, expect, it } from "vitest";
import { sourceKey } from "./source-key.js";

describe("sourceKey", () => {
  it("keys IPv4 by address, IPv4-mapped IPv6 as IPv4", () => {
    expect(sourceKey("192.0.2.1")).toBe("ip:192.0.2.1");
    expect(sourceKey("::ffff:192.0.2.1")).toBe("ip:192.0.2.1");
  });

  it("keys IPv6 by its /64, however it is written", () => {
    const k = "ip:2001:db8:1:2::/64";
    for (const a of [
      "2001:db8:1:2::1",
      "2001:db8:1:2:ffff:ffff:ffff:ffff",
      "2001:0DB8:0001:0002:0:0:0:9",
      "2001:db8:1:2::1%eth0",
    ]) {
      expect(sourceKey(a), a).toBe(k);
    }
    expect(sourceKey("2001:db8:1:3::1")).not.toBe(k);
    expect(sourceKey("::1")).toBe("ip:0:0:0:0::/64");
    expect(sourceKey("64:ff9b::192.0.2.1")).toBe("ip:64:ff9b:0:0::/64");
  });

  it("anything else is one shared 'unknown' key", () => {
    expect(sourceKey("")).toBe("ip:unknown");
    expect(sourceKey("not an ip")).toBe("ip:unknown");
  });
});
