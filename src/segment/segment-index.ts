import { parseIp, unmapIp, type IpRange } from "./ip-range.js";
import type { SegModel } from "./model.js";

/**
 * Maps an address to the segment that holds it, by binary search over the model's
 * sorted, non-overlapping ranges (one array per family).
 */
export class SegmentIndex {
  readonly #v4: { r: IpRange; seg: string }[] = [];
  readonly #v6: { r: IpRange; seg: string }[] = [];
  /** Every segment name of the model (those without addresses too). */
  readonly names: ReadonlySet<string>;

  constructor(model: SegModel) {
    this.names = new Set(model.segments.map((s) => s.name));
    for (const s of model.segments)
      for (const r of s.ranges) (r.family === 4 ? this.#v4 : this.#v6).push({ r, seg: s.name });
    const cmp = (a: { r: IpRange }, b: { r: IpRange }) =>
      a.r.start < b.r.start ? -1 : a.r.start > b.r.start ? 1 : 0;
    this.#v4.sort(cmp);
    this.#v6.sort(cmp);
  }

  /**
   * The segment holding `addr`, or undefined (outside the model or not an address). An
   * IPv4-mapped address (`::ffff:10.0.2.5`) is looked up as the IPv4 address it stands for.
   */
  lookup(addr: string): string | undefined {
    const parsed = parseIp(addr);
    if (!parsed) return undefined;
    const ip = unmapIp(parsed);
    return this.lookupValue(ip.family, ip.value);
  }

  lookupValue(family: 4 | 6, value: bigint): string | undefined {
    const list = family === 4 ? this.#v4 : this.#v6;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = list[mid]!;
      if (value < e.r.start) hi = mid - 1;
      else if (value > e.r.end) lo = mid + 1;
      else return e.seg;
    }
    return undefined;
  }
}
