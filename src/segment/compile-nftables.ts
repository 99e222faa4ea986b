import { ZtError } from "../core/errors.js";
import { formatRange, mergeRanges, type IpRange } from "./ip-range.js";
import {
  ANY_SEGMENT,
  segmentModeOf,
  type SegFlow,
  type SegMode,
  type SegModel,
  type Segment,
} from "./model.js";
import { mergePortRanges, type PortSpec } from "./port-spec.js";

/** What the ruleset is for: a router (forward chain) or the hosts of one segment (input/output). */
export type NftTarget =
  { kind: "router" } | { kind: "segment"; segment: string } | { kind: "host"; host: string };

export interface CompileNftOptions {
  target?: NftTarget;
  /** Free text put in the header comment (e.g. the model file's digest). */
  label?: string;
}

export interface CompileNftResult {
  text: string;
  stats: { sets: number; elements: number; rules: number; bytes: number };
}

/** The one table zt owns. Other tables are never touched. */
export const ZT_TABLE = "zt";

type Fam = 4 | 6;
const FAMS: readonly Fam[] = [4, 6];
const ADDR_TYPE = { 4: "ipv4_addr", 6: "ipv6_addr" } as const;
const SEL = { 4: "ip", 6: "ip6" } as const;
const ICMP = { 4: "icmp", 6: "ipv6-icmp" } as const;
const ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert";

/** Accumulates `src . dst . proto` keys with their port ranges, merged so nft sees no overlap. */
class ElementSet {
  readonly #ports = new Map<string, [number, number][]>();
  readonly #portless = new Set<string>();

  add(prefix: string, p: PortSpec, fam: Fam): void {
    if (p.proto === "icmp") {
      this.#portless.add(`${prefix}${ICMP[fam]}`);
      return;
    }
    const key = `${prefix}${p.proto}`;
    const list = this.#ports.get(key);
    if (list) list.push([p.lo!, p.hi!]);
    else this.#ports.set(key, [[p.lo!, p.hi!]]);
  }

  ported(): string[] {
    const out: string[] = [];
    for (const [key, ranges] of this.#ports) {
      for (const [lo, hi] of mergePortRanges(ranges))
        out.push(`${key} . ${lo === hi ? lo : `${lo}-${hi}`}`);
    }
    return out;
  }

  portless(): string[] {
    return [...this.#portless];
  }
}

function rangesOf(ranges: readonly IpRange[], fam: Fam): string[] {
  return ranges.filter((r) => r.family === fam).map(formatRange);
}

function setName(seg: string, fam: Fam): string {
  return `seg_${seg}_v${fam}`;
}

function rateText(f: SegFlow): string {
  return `limit rate ${f.rate!.count}/${f.rate!.unit}${f.burst ? ` burst ${f.burst} packets` : ""}`;
}

function q(s: string): string {
  return JSON.stringify(s.replace(/["\\]/g, "").slice(0, 120));
}

/**
 * Compiles a model into one nftables script for `nft -f`. The script replaces only
 * `table inet zt` atomically: `table inet zt {}` + `delete table inet zt` + the new
 * definition, all in one transaction. Allowed flows are concatenated interval sets
 * (`ip saddr . ip daddr . meta l4proto . th dport`), so a packet costs one lookup
 * however many flows there are; unmatched packets end in `zt_enforce` (log ZT-DROP,
 * count, drop) or `zt_audit` (log ZT-WOULD-DROP, count, accept) by segment mode.
 * Pure: model in, text out.
 */
export function compileNftables(
  model: SegModel,
  options: CompileNftOptions = {},
): CompileNftResult {
  const target = options.target ?? { kind: "router" };
  const segByName = new Map(model.segments.map((s) => [s.name, s]));
  const out: string[] = [];
  let sets = 0;
  let elements = 0;
  let rules = 0;
  const emitSet = (name: string, type: string, els: string[], counter: boolean) => {
    if (els.length === 0) return false;
    sets++;
    elements += els.length;
    out.push(`\tset ${name} {`, `\t\ttype ${type}`, `\t\tflags interval`);
    if (counter) out.push(`\t\tcounter`);
    out.push(`\t\telements = {\n\t\t\t${els.join(",\n\t\t\t")}\n\t\t}`, `\t}`, ``);
    return true;
  };
  const emitMap = (name: string, fam: Fam, els: string[]) => {
    if (els.length === 0) return false;
    sets++;
    elements += els.length;
    out.push(`\tmap ${name} {`, `\t\ttype ${ADDR_TYPE[fam]} : verdict`, `\t\tflags interval`);
    out.push(`\t\telements = {\n\t\t\t${els.join(",\n\t\t\t")}\n\t\t}`, `\t}`, ``);
    return true;
  };

  // --- which addresses this ruleset protects, and which mode applies ---
  let local: { seg: Segment; ranges: IpRange[] } | undefined;
  if (target.kind === "segment") {
    const seg = segByName.get(target.segment);
    if (!seg)
      throw new ZtError(
        "ZT_SEG_MODEL_INVALID",
        `--segment: unknown segment ${JSON.stringify(target.segment)}`,
      );
    local = { seg, ranges: seg.ranges };
  } else if (target.kind === "host") {
    for (const s of model.segments) {
      const h = s.hosts.find(
        (x) =>
          x.name === target.host || x.text === target.host || formatRange(x.range) === target.host,
      );
      if (h) {
        local = { seg: s, ranges: [h.range] };
        break;
      }
    }
    if (!local)
      throw new ZtError(
        "ZT_SEG_MODEL_INVALID",
        `--host: no segment lists host ${JSON.stringify(target.host)}`,
      );
  }
  const allSegs = model.segments;
  const expand = (name: string): Segment[] =>
    name === ANY_SEGMENT ? allSegs : [segByName.get(name)!];

  out.push(
    `#!/usr/sbin/nft -f`,
    `# zt micro-segmentation ruleset: generated by \`zt seg compile\`; do not edit.`,
    `# target: ${target.kind === "router" ? "router (forward chain)" : target.kind === "segment" ? `segment ${target.segment}` : `host ${target.host}`}${options.label ? `; ${options.label}` : ""}`,
    `# Replaces table inet ${ZT_TABLE} atomically and touches no other table.`,
    `table inet ${ZT_TABLE} {}`,
    `delete table inet ${ZT_TABLE}`,
    `table inet ${ZT_TABLE} {`,
    `\tcounter zt_drop {}`,
    `\tcounter zt_would_drop {}`,
    `\tcounter zt_invalid {}`,
    ``,
  );

  // --- per-segment named sets ---
  const segSetExists = new Set<string>();
  for (const s of allSegs) {
    for (const fam of FAMS) {
      const name = setName(s.name, fam);
      if (emitSet(name, ADDR_TYPE[fam], rangesOf(s.ranges, fam), false)) segSetExists.add(name);
    }
  }
  const allRanges = mergeRanges(allSegs.flatMap((s) => s.ranges));
  for (const fam of FAMS)
    emitSet(`zt_all_v${fam}`, ADDR_TYPE[fam], rangesOf(allRanges, fam), false);

  // --- flow sets, one pair (ported/portless) per direction and family ---
  const inDir = {
    name: "flows",
    plain: new Map<Fam, ElementSet>(),
    limited: new Map<number, Map<Fam, ElementSet>>(),
  };
  const outDir = {
    name: "oflows",
    plain: new Map<Fam, ElementSet>(),
    limited: new Map<number, Map<Fam, ElementSet>>(),
  };
  const setFor = (dir: typeof inDir, f: SegFlow, fam: Fam): ElementSet => {
    let byFam: Map<Fam, ElementSet>;
    if (f.rate) {
      byFam = dir.limited.get(f.index) ?? new Map();
      dir.limited.set(f.index, byFam);
    } else byFam = dir.plain;
    let es = byFam.get(fam);
    if (!es) byFam.set(fam, (es = new ElementSet()));
    return es;
  };
  const addFlow = (dir: typeof inDir, f: SegFlow, srcRanges: IpRange[], dstRanges: IpRange[]) => {
    for (const fam of FAMS) {
      const srcs = rangesOf(srcRanges, fam);
      const dsts = rangesOf(dstRanges, fam);
      if (srcs.length === 0 || dsts.length === 0) continue;
      const es = setFor(dir, f, fam);
      for (const s of srcs)
        for (const d of dsts) for (const p of f.ports) es.add(`${s} . ${d} . `, p, fam);
    }
  };
  const inScope = (name: string, seg: Segment) => name === ANY_SEGMENT || name === seg.name;
  for (const f of model.flows) {
    if (!local) {
      for (const from of expand(f.from))
        for (const to of expand(f.to)) addFlow(inDir, f, from.ranges, to.ranges);
      continue;
    }
    if (inScope(f.to, local.seg))
      for (const from of expand(f.from)) addFlow(inDir, f, from.ranges, local.ranges);
    if (inScope(f.from, local.seg))
      for (const to of expand(f.to)) addFlow(outDir, f, local.ranges, to.ranges);
  }
  const flowType = (fam: Fam, ported: boolean) =>
    `${ADDR_TYPE[fam]} . ${ADDR_TYPE[fam]} . inet_proto${ported ? " . inet_service" : ""}`;
  const flowRules = (dir: typeof inDir): string[] => {
    const rs: string[] = [];
    const emitPair = (
      base: string,
      es: ElementSet | undefined,
      fam: Fam,
      tail: string,
      comment: string,
    ) => {
      if (!es) return;
      if (emitSet(`${base}_v${fam}`, flowType(fam, true), es.ported(), true)) {
        rs.push(
          `${SEL[fam]} saddr . ${SEL[fam]} daddr . meta l4proto . th dport @${base}_v${fam} ${tail} comment ${q(comment)}`,
        );
      }
      if (emitSet(`${base}_icmp_v${fam}`, flowType(fam, false), es.portless(), true)) {
        rs.push(
          `${SEL[fam]} saddr . ${SEL[fam]} daddr . meta l4proto @${base}_icmp_v${fam} ${tail} comment ${q(comment)}`,
        );
      }
    };
    for (const fam of FAMS)
      emitPair(dir.name, dir.plain.get(fam), fam, "counter accept", "allowed flows");
    for (const [idx, byFam] of dir.limited) {
      const f = model.flows[idx]!;
      for (const fam of FAMS)
        emitPair(
          `${dir.name}_r${idx}`,
          byFam.get(fam),
          fam,
          `${rateText(f)} counter accept`,
          `flows[${idx}] ${f.from}->${f.to} rate ${f.rate!.count}/${f.rate!.unit}`,
        );
    }
    return rs;
  };

  // --- egress (segment → outside the model) and ingress (outside → segment) ---
  const outsideRules = (
    kind: "egress" | "ingress",
    segs: { name: string; ranges: IpRange[] }[],
  ): string[] => {
    const rs: string[] = [];
    const table = kind === "egress" ? model.egress : model.ingress;
    const [inside, outside] =
      kind === "egress" ? (["saddr", "daddr"] as const) : (["daddr", "saddr"] as const);
    for (const fam of FAMS) {
      const es = new ElementSet();
      for (const s of segs) {
        const list = table.get(s.name);
        if (!list) continue;
        for (const addr of rangesOf(s.ranges, fam))
          for (const p of list) es.add(`${addr} . `, p, fam);
      }
      const notModel = allRanges.some((r) => r.family === fam)
        ? `${SEL[fam]} ${outside} != @zt_all_v${fam} `
        : `meta nfproto ipv${fam} `;
      const t = `${ADDR_TYPE[fam]} . inet_proto`;
      if (emitSet(`${kind}_v${fam}`, `${t} . inet_service`, es.ported(), true)) {
        rs.push(
          `${notModel}${SEL[fam]} ${inside} . meta l4proto . th dport @${kind}_v${fam} counter accept comment "${kind}"`,
        );
      }
      if (emitSet(`${kind}_icmp_v${fam}`, t, es.portless(), true)) {
        rs.push(
          `${notModel}${SEL[fam]} ${inside} . meta l4proto @${kind}_icmp_v${fam} counter accept comment "${kind}"`,
        );
      }
    }
    return rs;
  };

  const preamble = (hook: "input" | "forward" | "output"): string[] => {
    const rs = [
      `ct state established,related counter accept`,
      `ct state invalid counter name "zt_invalid" drop`,
    ];
    if (hook === "input") rs.unshift(`iif "lo" accept`);
    if (hook === "output") rs.unshift(`oif "lo" accept`);
    // RFC 4861: without neighbour discovery IPv6 stops working altogether
    if (hook !== "forward") rs.push(`icmpv6 type { ${ND_TYPES} } accept`);
    return rs;
  };
  const modeChain = (m: SegMode) => (m === "enforce" ? "zt_enforce" : "zt_audit");

  const chains: { name: string; hook: "input" | "forward" | "output"; rules: string[] }[] = [];
  if (!local) {
    // router: per-segment modes through verdict maps keyed on destination, then source
    const modeMaps: string[] = [];
    for (const [key, dirSel] of [
      ["dmode", "daddr"],
      ["smode", "saddr"],
    ] as const) {
      for (const fam of FAMS) {
        const els: string[] = [];
        for (const s of allSegs) {
          const m = segmentModeOf(model, s.name);
          if (m === model.mode.default) continue;
          for (const r of rangesOf(s.ranges, fam)) els.push(`${r} : goto ${modeChain(m)}`);
        }
        if (!emitMap(`${key}_v${fam}`, fam, els)) continue;
        // the source's mode counts only for destinations outside the model
        const outside =
          key === "smode" && allRanges.some((r) => r.family === fam)
            ? `${SEL[fam]} daddr != @zt_all_v${fam} `
            : "";
        modeMaps.push(`${outside}${SEL[fam]} ${dirSel} vmap @${key}_v${fam}`);
      }
    }
    const rulesF = [
      ...preamble("forward"),
      ...flowRules(inDir),
      ...outsideRules("ingress", allSegs),
      ...outsideRules("egress", allSegs),
      ...modeMaps,
      `goto ${modeChain(model.mode.default)}`,
    ];
    chains.push({ name: "forward", hook: "forward", rules: rulesF });
  } else {
    const m = segmentModeOf(model, local.seg.name);
    chains.push({
      name: "input",
      hook: "input",
      rules: [
        ...preamble("input"),
        ...flowRules(inDir),
        ...outsideRules("ingress", [{ name: local.seg.name, ranges: local.ranges }]),
        `goto ${modeChain(m)}`,
      ],
    });
    if (model.egress.has(local.seg.name)) {
      const rulesO = [
        ...preamble("output"),
        ...flowRules(outDir),
        ...outsideRules("egress", [{ name: local.seg.name, ranges: local.ranges }]),
        `goto ${modeChain(m)}`,
      ];
      chains.push({ name: "output", hook: "output", rules: rulesO });
    }
  }

  out.push(
    `\tchain zt_enforce {`,
    `\t\tlog prefix "ZT-DROP " counter name "zt_drop" drop`,
    `\t}`,
    ``,
    `\tchain zt_audit {`,
    `\t\tlog prefix "ZT-WOULD-DROP " counter name "zt_would_drop" accept`,
    `\t}`,
  );
  rules += 2;
  for (const c of chains) {
    out.push(
      ``,
      `\tchain ${c.name} {`,
      `\t\ttype filter hook ${c.hook} priority filter; policy drop;`,
    );
    for (const r of c.rules) out.push(`\t\t${r}`);
    out.push(`\t}`);
    rules += c.rules.length;
  }
  out.push(`}`, ``);
  const text = out.join("\n");
  return { text, stats: { sets, elements, rules, bytes: Buffer.byteLength(text) } };
}
