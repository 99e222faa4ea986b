import { canonicalAddress, parseIp } from "./ip-range.js";
import type { ObservedPacket } from "./log-line.js";
import { formatPortSpec, type PortSpec, type SegProto } from "./port-spec.js";
import type { SegmentIndex } from "./segment-index.js";
import { SEGMENT_NAME_RE } from "./model-schema.js";

/** One observed address pair and service, aggregated. */
export interface ObservedFlow {
  src: string;
  dst: string;
  proto: SegProto;
  port?: number;
  count: number;
  first?: number;
  last?: number;
}

/**
 * The most distinct flows (address pair × service) an aggregate holds: about 550 MB. A scan
 * from spoofed sources logs a new flow per packet; past the cap, packets of new flows are
 * counted (`unaggregated`) but not kept, so memory stays bounded.
 */
export const DEFAULT_MAX_FLOWS = 1_000_000;

/** Canonical address texts already computed (most logs repeat a few addresses). */
const CANON_CACHE_MAX = 65_536;

/**
 * Aggregates observed packets by (source, destination, protocol, destination port),
 * ignoring ephemeral source ports. Addresses are counted in canonical form
 * (`canonicalAddress`): the kernel's full IPv6 text and the RFC 5952 form are one host, and
 * IPv4-mapped addresses (`::ffff:10.0.1.10`, as zt's own JSON records carry IPv4 clients of
 * a dual-stack listener) count as the IPv4 address. A packet whose source or destination is
 * not an address is not counted. Pure and incremental: `add` per packet, then `flows()`.
 */
export class FlowAggregator {
  readonly #map = new Map<string, ObservedFlow>();
  readonly #canon = new Map<string, string | null>();
  readonly #maxFlows: number;
  packets = 0;
  /** Packets of flows not kept because the aggregate was full (see DEFAULT_MAX_FLOWS). */
  unaggregated = 0;

  constructor(options: { maxFlows?: number } = {}) {
    this.#maxFlows = options.maxFlows ?? DEFAULT_MAX_FLOWS;
  }

  #canonical(text: string): string | undefined {
    let c = this.#canon.get(text);
    if (c === undefined) {
      c = canonicalAddress(text) ?? null;
      if (this.#canon.size >= CANON_CACHE_MAX) this.#canon.clear();
      this.#canon.set(text, c);
    }
    return c ?? undefined;
  }

  /** Counts a packet; false (not counted) when its source or destination is not an address. */
  add(p: ObservedPacket): boolean {
    const src = this.#canonical(p.src);
    const dst = this.#canonical(p.dst);
    if (src === undefined || dst === undefined) return false;
    this.packets++;
    const key =
      p.port === undefined ? `${src} ${dst} ${p.proto}` : `${src} ${dst} ${p.proto} ${p.port}`;
    const a = this.#map.get(key);
    if (!a && this.#map.size >= this.#maxFlows) {
      this.unaggregated++;
      return true;
    }
    if (!a) {
      const f: ObservedFlow = { src, dst, proto: p.proto, count: 1 };
      if (p.port !== undefined) f.port = p.port;
      if (p.ts !== undefined) {
        f.first = p.ts;
        f.last = p.ts;
      }
      this.#map.set(key, f);
      return true;
    }
    a.count++;
    if (p.ts !== undefined) {
      if (a.first === undefined || p.ts < a.first) a.first = p.ts;
      if (a.last === undefined || p.ts > a.last) a.last = p.ts;
    }
    return true;
  }

  /** The aggregated flows, most frequent first (copies). */
  flows(): ObservedFlow[] {
    const out = [...this.#map.values()].map((f) => ({ ...f }));
    return out.sort((a, b) => b.count - a.count || (a.src < b.src ? -1 : a.src > b.src ? 1 : 0));
  }
}

export interface LearnedFlow {
  from: string;
  to: string;
  ports: string[];
  count: number;
  first_seen?: string;
  last_seen?: string;
}

export interface InventoryEntry {
  address: string;
  segment: string | null;
  sent: number;
  received: number;
  services: string[];
}

export interface LearnResult {
  inventory: InventoryEntry[];
  /** Proposed least-privilege flows between segments. */
  flows: LearnedFlow[];
  /** Proposed egress per segment (destinations outside the model). */
  egress: Record<string, string[]>;
  /** Proposed ingress per segment (sources outside the model). */
  ingress: Record<string, string[]>;
  /** Segments proposed for addresses the model does not know (one per address). */
  segments: Record<string, { hosts: string[] }>;
  /** Address-level flows, the input of `zt seg simulate`. */
  observed: ObservedFlow[];
}

/**
 * The segment name proposed for an address outside the model (canonical text, see
 * `canonicalAddress`): `h-10-0-1-10`, `h-fd00-1--10`. Distinct addresses get distinct names
 * (`1.2.3.4` is `h-1-2-3-4`, `1:2:3:4::` is `h-1-2-3-4--`), and every name is a valid segment
 * name: an IPv6 address whose text is too long is written as its 32 hex digits. A name in
 * `taken` (the model's own segments) is not given: the proposal would replace that segment.
 */
export function hostSegmentName(addr: string, taken?: ReadonlySet<string>): string {
  const name = `h-${addr.replace(/[.:]/g, "-")}`.toLowerCase();
  if (SEGMENT_NAME_RE.test(name) && !taken?.has(name)) return name;
  const ip = parseIp(addr);
  if (!ip) return name;
  // The address's digits: no other address has them, and no dotted or colon form gives a
  // name without a "-" after "h-". Past a model segment that has this name too, "_N".
  const hex = `h-${ip.value.toString(16).padStart(ip.family === 4 ? 8 : 32, "0")}`;
  let n = hex;
  for (let i = 2; taken?.has(n); i++) n = `${hex}_${i}`;
  return n;
}

function iso(t: number | undefined): string | undefined {
  return t === undefined ? undefined : new Date(t).toISOString();
}

function spec(f: ObservedFlow): string {
  const p: PortSpec =
    f.proto === "icmp" ? { proto: "icmp" } : { proto: f.proto, lo: f.port!, hi: f.port! };
  return formatPortSpec(p);
}

/**
 * Turns aggregated flows into an inventory and a least-privilege proposal. With a model
 * (`index`), addresses map to its segments and traffic from a segment to unknown
 * destinations becomes proposed egress; without one (or for unknown sources) each address
 * gets a proposed segment of its own. Pure.
 */
export function summariseFlows(
  observed: ObservedFlow[],
  index: SegmentIndex | undefined,
): LearnResult {
  const segOf = new Map<string, string | null>();
  const lookup = (a: string) => {
    let s = segOf.get(a);
    if (s === undefined) {
      s = index?.lookup(a) ?? null;
      segOf.set(a, s);
    }
    return s;
  };
  const inv = new Map<string, InventoryEntry>();
  const entry = (a: string) => {
    let e = inv.get(a);
    if (!e)
      inv.set(a, (e = { address: a, segment: lookup(a), sent: 0, received: 0, services: [] }));
    return e;
  };
  const pairs = new Map<
    string,
    {
      from: string;
      to: string;
      ports: Map<string, number>;
      count: number;
      first?: number;
      last?: number;
    }
  >();
  const egress = new Map<string, Set<string>>();
  const ingress = new Map<string, Set<string>>();
  const proposed: Record<string, { hosts: string[] }> = {};
  const names = new Map<string, string>();
  const segName = (a: string) => {
    let n = names.get(a);
    if (n !== undefined) return n;
    const s = lookup(a);
    if (s !== null) n = s;
    else {
      n = hostSegmentName(a, index?.names);
      proposed[n] ??= { hosts: [a] };
    }
    names.set(a, n);
    return n;
  };
  const services = new Map<string, Set<string>>();
  for (const f of observed) {
    const sp = spec(f);
    entry(f.src).sent += f.count;
    entry(f.dst).received += f.count;
    let svc = services.get(f.dst);
    if (!svc) services.set(f.dst, (svc = new Set()));
    svc.add(sp);
    const fromKnown = lookup(f.src);
    const toKnown = lookup(f.dst);
    if (index && (fromKnown === null) !== (toKnown === null)) {
      // exactly one side is in the model: egress from it, or ingress to it
      const [map, seg] = fromKnown !== null ? [egress, fromKnown] : [ingress, toKnown!];
      let set = map.get(seg);
      if (!set) map.set(seg, (set = new Set()));
      set.add(sp);
      continue;
    }
    const from = segName(f.src);
    const to = segName(f.dst);
    const key = `${from} ${to}`;
    let p = pairs.get(key);
    if (!p) pairs.set(key, (p = { from, to, ports: new Map(), count: 0 }));
    p.count += f.count;
    p.ports.set(sp, (p.ports.get(sp) ?? 0) + f.count);
    if (f.first !== undefined && (p.first === undefined || f.first < p.first)) p.first = f.first;
    if (f.last !== undefined && (p.last === undefined || f.last > p.last)) p.last = f.last;
  }
  const flows: LearnedFlow[] = [...pairs.values()]
    .sort(
      (a, b) =>
        b.count - a.count ||
        (a.from < b.from ? -1 : a.from > b.from ? 1 : a.to < b.to ? -1 : a.to > b.to ? 1 : 0),
    )
    .map((p) => {
      const lf: LearnedFlow = {
        from: p.from,
        to: p.to,
        ports: [...p.ports.keys()].sort(),
        count: p.count,
      };
      const first = iso(p.first);
      const last = iso(p.last);
      if (first) lf.first_seen = first;
      if (last) lf.last_seen = last;
      return lf;
    });
  const sorted = (m: Map<string, Set<string>>) => {
    const out: Record<string, string[]> = {};
    for (const [s, set] of [...m].sort((a, b) => (a[0] < b[0] ? -1 : 1))) out[s] = [...set].sort();
    return out;
  };
  const inventory = [...inv.values()].sort((a, b) => (a.address < b.address ? -1 : 1));
  for (const e of inventory) e.services = [...(services.get(e.address) ?? [])].sort();
  return {
    inventory,
    flows,
    egress: sorted(egress),
    ingress: sorted(ingress),
    segments: proposed,
    observed,
  };
}
