import { BlockList, isIP } from "node:net";
import { ZtError } from "./errors.js";

/** Strips the IPv4-mapped IPv6 prefix so `::ffff:127.0.0.1` is treated as `127.0.0.1`. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return "0.0.0.0";
  return address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** A set of CIDRs with an O(prefixes) membership test (node:net BlockList). */
export class CidrSet {
  readonly #list = new BlockList();
  readonly size: number;

  constructor(cidrs: readonly string[], what = "cidr") {
    for (const c of cidrs) {
      const [addr, bitsText] = c.split("/");
      const family = isIP(addr ?? "");
      if (family === 0)
        throw new ZtError("ZT_CONFIG_INVALID", `${what}: "${c}" is not an IP address or CIDR`);
      const max = family === 4 ? 32 : 128;
      const bits = bitsText === undefined ? max : Number(bitsText);
      if (!Number.isInteger(bits) || bits < 0 || bits > max) {
        throw new ZtError("ZT_CONFIG_INVALID", `${what}: "${c}" has an invalid prefix length`);
      }
      this.#list.addSubnet(addr!, bits, family === 4 ? "ipv4" : "ipv6");
    }
    this.size = cidrs.length;
  }

  has(address: string): boolean {
    const ip = normalizeIp(address);
    const family = isIP(ip);
    if (family === 0) return false;
    return this.#list.check(ip, family === 4 ? "ipv4" : "ipv6");
  }
}
