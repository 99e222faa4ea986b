import { BlockList, isIP } from "node:net";
import { ZtError } from "./errors.js";

/** Strips the IPv4-mapped IPv6 prefix so `::ffff:127.0.0.1` is treated as `127.0.0.1`. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return "0.0.0.0";
  return address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** One parsed CIDR (a bare address is its own /32 or /128). */
export interface Cidr {
  address: string;
  bits: number;
  family: "ipv4" | "ipv6";
}

/**
 * Parses "10.0.0.0/8", "2001:db8::/32" or a bare address; undefined for anything else.
 * Strict: the prefix length is 1–3 decimal digits within the family's width, so "10.0.0.1/"
 * (which `Number("")` would read as /0, every address) and "10.0.0.0/8/9" are refused.
 */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const v = isIP(address);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const bitsText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(bitsText)) return undefined;
    bits = Number(bitsText);
    if (bits > max) return undefined;
  }
  return { address, bits, family: v === 4 ? "ipv4" : "ipv6" };
}

/** A set of CIDRs with an O(prefixes) membership test (node:net BlockList). */
export class CidrSet {
  readonly #list = new BlockList();
  readonly size: number;

  constructor(cidrs: readonly string[], what = "cidr") {
    for (const c of cidrs) {
      const parsed = parseCidr(c);
      if (!parsed)
        throw new ZtError(
          "ZT_CONFIG_INVALID",
          `${what}: "${c}" is not an IP address or CIDR (e.g. 10.0.0.0/8)`,
        );
      this.#list.addSubnet(parsed.address, parsed.bits, parsed.family);
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
