import { ZtError } from "../core/errors.js";
import { formatRange, mergeRanges, type IpRange } from "./ip-range.js";
import {
  ANY_SEGMENT,
  DEFAULT_LOG_LIMIT,
  segmentModeOf,
  type SegFlow,
  type SegMode,
  type SegModel,
  type Segment,
} from "./model.js";
import { mergePortRanges, type PortSpec } from "./port-spec.js";
import { quoteInput } from "../core/printable.js";

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

/** Control characters and Unicode line/paragraph separators: a newline would end a comment. */
const CONTROL_RE = /[\p{Cc}\p{Zl}\p{Zp}]/gu;

/**
 * Text for a `#` comment line of the script: control characters (a newline would end the
 * comment and start a command: `flush ruleset`) are written as `\uXXXX`, so free text such
 * as a model file's name can never add a line.
 */
function commentLine(s: string): string {
  return s.replace(CONTROL_RE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A quoted nft string (a rule comment): no quotes, backslashes or control characters, ≤ 120 bytes. */
function q(s: string): string {
  let t = s.replace(/["\\]/g, "").replace(CONTROL_RE, " ");
  while (Buffer.byteLength(t) > 120) t = [...t].slice(0, -1).join("");
  return `"${t}"`;
}

/**
 * The conntrack mark bit zt sets on a connection the audit catch-all (`zt_audit`) accepted,
 * i.e. one the model did not allow. Established packets carrying it are checked again by the
 * next ruleset (`zt_recheck`): moving a segment from audit to enforce cuts them, while flows
 * the model allows (or that stay in audit) go on. Other bits of the mark are left alone.
 */
export const ZT_AUDIT_CT_MARK = 0x00100000;
const hex32 = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, "0")}`;
const MARK = hex32(ZT_AUDIT_CT_MARK);
const CLEAR_MARK = `ct mark set ct mark and ${hex32(~ZT_AUDIT_CT_MARK)}`;

/**
 * How a rule reads a packet's addresses: as sent (the connection's original direction) or,
 * for a reply, turned round so it is matched against the flow that opened the connection.
 */
interface View {
  src: "saddr" | "daddr";
  dst: "saddr" | "daddr";
  port: "dport" | "sport";
}
const ORIGINAL: View = { src: "saddr", dst: "daddr", port: "dport" };
const REPLY: View = { src: "daddr", dst: "saddr", port: "sport" };

/** One allowed-flow set and what its rule does. */
interface FlowLookup {
  set: string;
  fam: Fam;
  ported: boolean;
  /** `limit rate …` for a rate-limited flow (new connections only). */
  limit?: string;
  comment: string;
}

/** One egress/ingress set. */
interface OutsideLookup {
  kind: "egress" | "ingress";
  set: string;
  fam: Fam;
  ported: boolean;
  /** Whether the model has addresses of this family (then "outside" is `!= @zt_all_vN`). */
  modelHasFam: boolean;
}

/**
 * A flow rule. For new connections: accept (with the flow's rate limit). In `zt_recheck`
 * (an established connection the audit catch-all accepted): the model allows it now, so clear
 * the mark and accept.
 */
function flowRule(l: FlowLookup, v: View, recheck: boolean): string {
  const sel = SEL[l.fam];
  const key = `${sel} ${v.src} . ${sel} ${v.dst} . meta l4proto${l.ported ? ` . th ${v.port}` : ""}`;
  if (recheck) return `${key} @${l.set} ${CLEAR_MARK} accept comment ${q(`recheck: ${l.comment}`)}`;
  return `${key} @${l.set} ${l.limit ? `${l.limit} ` : ""}counter accept comment ${q(l.comment)}`;
}

function outsideRule(o: OutsideLookup, v: View, recheck: boolean): string {
  const sel = SEL[o.fam];
  const [inside, outside] = o.kind === "egress" ? [v.src, v.dst] : [v.dst, v.src];
  const notModel = o.modelHasFam
    ? `${sel} ${outside} != @zt_all_v${o.fam} `
    : `meta nfproto ipv${o.fam} `;
  const key = `${sel} ${inside} . meta l4proto${o.ported ? ` . th ${v.port}` : ""}`;
  return `${notModel}${key} @${o.set} ${recheck ? `${CLEAR_MARK} accept` : "counter accept"} comment "${o.kind}"`;
}

/**
 * Compiles a model into one nftables script for `nft -f`. The script replaces only
 * `table inet zt` atomically: `table inet zt {}` + `delete table inet zt` + the new
 * definition, all in one transaction. Allowed flows are concatenated interval sets
 * (`ip saddr . ip daddr . meta l4proto . th dport`), so a packet costs one lookup
 * however many flows there are; unmatched packets end in `zt_enforce` (log ZT-DROP,
 * count, drop) or `zt_audit` (log ZT-WOULD-DROP, count, accept) by segment mode. The
 * logging alone is rate-limited (`model.log`, else DEFAULT_LOG_LIMIT); the verdict is not.
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
        `--segment: unknown segment ${quoteInput(target.segment)}`,
      );
    // Every flow to this host is keyed on the segment's addresses: with none, the input
    // chain would allow nothing and drop (or log) everything the host receives, SSH included.
    if (seg.ranges.length === 0)
      throw new ZtError(
        "ZT_SEG_MODEL_INVALID",
        `--segment: segment ${JSON.stringify(seg.name)} has no hosts, so its ruleset would match no address of this host and ${segmentModeOf(model, seg.name) === "enforce" ? "drop" : "log as would-drop"} everything it receives; list the host's addresses under segments.${seg.name}.hosts`,
      );
    local = { seg, ranges: seg.ranges };
  } else if (target.kind === "host") {
    // Every entry of that name: a dual-stack host is two entries (IPv4 and IPv6) of one name;
    // taking the first left the other family to the catch-all (dropped when enforced).
    const found = model.segments.flatMap((s) =>
      s.hosts
        .filter(
          (x) =>
            x.name === target.host ||
            x.text === target.host ||
            formatRange(x.range) === target.host,
        )
        .map((h) => ({ seg: s, range: h.range })),
    );
    const segs = [...new Set(found.map((f) => f.seg))];
    if (segs.length === 0)
      throw new ZtError(
        "ZT_SEG_MODEL_INVALID",
        `--host: no segment lists host ${quoteInput(target.host)}`,
      );
    if (segs.length > 1)
      throw new ZtError(
        "ZT_SEG_MODEL_INVALID",
        `--host: host ${JSON.stringify(target.host)} is listed in segments ${segs.map((s) => JSON.stringify(s.name)).join(" and ")}: a host belongs to one segment (give its entries one segment, or distinct names)`,
      );
    local = { seg: segs[0]!, ranges: mergeRanges(found.map((f) => f.range)) };
  }
  const allSegs = model.segments;
  const expand = (name: string): Segment[] =>
    name === ANY_SEGMENT ? allSegs : [segByName.get(name)!];

  out.push(
    `#!/usr/sbin/nft -f`,
    `# zt micro-segmentation ruleset: generated by \`zt seg compile\`; do not edit.`,
    // free text (a model file's name, --host) only ever lands inside this one comment line
    commentLine(
      `# target: ${target.kind === "router" ? "router (forward chain)" : target.kind === "segment" ? `segment ${target.segment}` : `host ${target.host}`}${options.label ? `; ${options.label}` : ""}`,
    ),
    `# Replaces table inet ${ZT_TABLE} atomically and touches no other table.`,
    `table inet ${ZT_TABLE} {}`,
    `delete table inet ${ZT_TABLE}`,
    `table inet ${ZT_TABLE} {`,
    `\tcounter zt_drop {}`,
    `\tcounter zt_would_drop {}`,
    `\tcounter zt_invalid {}`,
    `\tcounter zt_cut {}`,
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
  /** Emits a direction's flow sets; returns what their rules look up. */
  const flowLookups = (dir: typeof inDir): FlowLookup[] => {
    const ls: FlowLookup[] = [];
    const emitPair = (
      base: string,
      es: ElementSet | undefined,
      fam: Fam,
      comment: string,
      limit?: string,
    ) => {
      if (!es) return;
      const extra = limit ? { limit } : {};
      if (emitSet(`${base}_v${fam}`, flowType(fam, true), es.ported(), true))
        ls.push({ set: `${base}_v${fam}`, fam, ported: true, comment, ...extra });
      if (emitSet(`${base}_icmp_v${fam}`, flowType(fam, false), es.portless(), true))
        ls.push({ set: `${base}_icmp_v${fam}`, fam, ported: false, comment, ...extra });
    };
    for (const fam of FAMS) emitPair(dir.name, dir.plain.get(fam), fam, "allowed flows");
    for (const [idx, byFam] of dir.limited) {
      const f = model.flows[idx]!;
      for (const fam of FAMS)
        emitPair(
          `${dir.name}_r${idx}`,
          byFam.get(fam),
          fam,
          `flows[${idx}] ${f.from}->${f.to} rate ${f.rate!.count}/${f.rate!.unit}`,
          rateText(f),
        );
    }
    return ls;
  };

  // --- egress (segment → outside the model) and ingress (outside → segment) ---
  const outsideLookups = (
    kind: "egress" | "ingress",
    segs: { name: string; ranges: IpRange[] }[],
  ): OutsideLookup[] => {
    const ls: OutsideLookup[] = [];
    const table = kind === "egress" ? model.egress : model.ingress;
    for (const fam of FAMS) {
      const es = new ElementSet();
      for (const s of segs) {
        const list = table.get(s.name);
        if (!list) continue;
        for (const addr of rangesOf(s.ranges, fam))
          for (const p of list) es.add(`${addr} . `, p, fam);
      }
      const modelHasFam = allRanges.some((r) => r.family === fam);
      const t = `${ADDR_TYPE[fam]} . inet_proto`;
      if (emitSet(`${kind}_v${fam}`, `${t} . inet_service`, es.ported(), true))
        ls.push({ kind, set: `${kind}_v${fam}`, fam, ported: true, modelHasFam });
      if (emitSet(`${kind}_icmp_v${fam}`, t, es.portless(), true))
        ls.push({ kind, set: `${kind}_icmp_v${fam}`, fam, ported: false, modelHasFam });
    }
    return ls;
  };

  const modeChain = (m: SegMode) => (m === "enforce" ? "zt_enforce" : "zt_audit");
  /** In `zt_recheck`: a connection the model does not allow is cut where enforced, kept where audited. */
  const recheckVerdict = (m: SegMode) => (m === "enforce" ? "goto zt_cut" : "accept");

  // Connections the audit catch-all accepted carry ZT_AUDIT_CT_MARK. Without an enforcing
  // segment every such connection would be kept anyway, so the recheck is left out.
  // On a host, the output chain takes the mode of the destination's segment, so one that
  // enforces counts too.
  const anyEnforce = local
    ? segmentModeOf(model, local.seg.name) === "enforce" ||
      (model.egress.has(local.seg.name) &&
        allSegs.some((s) => segmentModeOf(model, s.name) === "enforce"))
    : model.mode.default === "enforce" ||
      allSegs.some((s) => segmentModeOf(model, s.name) === "enforce");
  const preamble = (hook: "input" | "forward" | "output"): string[] => {
    const rs = [
      `ct state established,related counter accept`,
      `ct state invalid counter name "zt_invalid" drop`,
    ];
    // before the established fast path: connections accepted only by audit are checked again
    if (anyEnforce)
      rs.unshift(`ct state established,related ct mark and ${MARK} == ${MARK} goto zt_recheck`);
    if (hook === "input") rs.unshift(`iif "lo" accept`);
    if (hook === "output") rs.unshift(`oif "lo" accept`);
    // RFC 4861: without neighbour discovery IPv6 stops working altogether
    if (hook !== "forward") rs.push(`icmpv6 type { ${ND_TYPES} } accept`);
    return rs;
  };

  const chains: { name: string; hook: "input" | "forward" | "output"; rules: string[] }[] = [];
  /** zt_recheck (packets in the connection's original direction) and zt_recheck_reply. */
  const recheck: { original: string[]; reply: string[] | undefined } = {
    original: [],
    reply: undefined,
  };
  if (!local) {
    // router: per-segment modes through verdict maps keyed on destination, then source
    const mapExists = new Set<string>();
    const modeMaps = (view: View, forRecheck: boolean): string[] => {
      const rs: string[] = [];
      for (const [key, byDst] of [
        ["dmode", true],
        ["smode", false],
      ] as const) {
        for (const fam of FAMS) {
          const name = `${forRecheck ? "r" : ""}${key}_v${fam}`;
          if (!mapExists.has(name)) continue;
          // the source's mode counts only for destinations outside the model
          const outside =
            !byDst && allRanges.some((r) => r.family === fam)
              ? `${SEL[fam]} ${view.dst} != @zt_all_v${fam} `
              : "";
          rs.push(`${outside}${SEL[fam]} ${byDst ? view.dst : view.src} vmap @${name}`);
        }
      }
      return rs;
    };
    // rdmode/rsmode: the same maps for zt_recheck, where enforce cuts and audit keeps
    for (const forRecheck of anyEnforce ? [false, true] : [false]) {
      for (const key of ["dmode", "smode"]) {
        for (const fam of FAMS) {
          const els: string[] = [];
          for (const s of allSegs) {
            const m = segmentModeOf(model, s.name);
            if (m === model.mode.default) continue;
            const verdict = forRecheck ? recheckVerdict(m) : `goto ${modeChain(m)}`;
            for (const r of rangesOf(s.ranges, fam)) els.push(`${r} : ${verdict}`);
          }
          const name = `${forRecheck ? "r" : ""}${key}_v${fam}`;
          if (emitMap(name, fam, els)) mapExists.add(name);
        }
      }
    }
    const flows = flowLookups(inDir);
    const outside = [...outsideLookups("ingress", allSegs), ...outsideLookups("egress", allSegs)];
    chains.push({
      name: "forward",
      hook: "forward",
      rules: [
        ...preamble("forward"),
        ...flows.map((l) => flowRule(l, ORIGINAL, false)),
        ...outside.map((o) => outsideRule(o, ORIGINAL, false)),
        ...modeMaps(ORIGINAL, false),
        `goto ${modeChain(model.mode.default)}`,
      ],
    });
    const recheckRules = (view: View) => [
      ...flows.map((l) => flowRule(l, view, true)),
      ...outside.map((o) => outsideRule(o, view, true)),
      ...modeMaps(view, true),
      recheckVerdict(model.mode.default),
    ];
    recheck.original = [`ct direction reply goto zt_recheck_reply`, ...recheckRules(ORIGINAL)];
    recheck.reply = recheckRules(REPLY);
  } else {
    const m = segmentModeOf(model, local.seg.name);
    const self = [{ name: local.seg.name, ranges: local.ranges }];
    const inFlows = flowLookups(inDir);
    const ingress = outsideLookups("ingress", self);
    chains.push({
      name: "input",
      hook: "input",
      rules: [
        ...preamble("input"),
        ...inFlows.map((l) => flowRule(l, ORIGINAL, false)),
        ...ingress.map((o) => outsideRule(o, ORIGINAL, false)),
        `goto ${modeChain(m)}`,
      ],
    });
    let outFlows: FlowLookup[] = [];
    let egress: OutsideLookup[] = [];
    const hasOutput = model.egress.has(local.seg.name);
    /**
     * As on a router, a packet the model does not allow takes its destination segment's
     * mode (this host's own only for destinations outside the model): dmode_vN / rdmode_vN
     * map the segments whose mode differs from this host's. Input needs none: its
     * destination is this host.
     */
    const mapExists = new Set<string>();
    const destModes = (view: View, forRecheck: boolean): string[] =>
      FAMS.filter((fam) => mapExists.has(`${forRecheck ? "r" : ""}dmode_v${fam}`)).map(
        (fam) => `${SEL[fam]} ${view.dst} vmap @${forRecheck ? "r" : ""}dmode_v${fam}`,
      );
    if (hasOutput) {
      for (const forRecheck of anyEnforce ? [false, true] : [false]) {
        for (const fam of FAMS) {
          const els: string[] = [];
          for (const s of allSegs) {
            const sm = segmentModeOf(model, s.name);
            if (s === local.seg || sm === m) continue;
            const verdict = forRecheck ? recheckVerdict(sm) : `goto ${modeChain(sm)}`;
            for (const r of rangesOf(s.ranges, fam)) els.push(`${r} : ${verdict}`);
          }
          const name = `${forRecheck ? "r" : ""}dmode_v${fam}`;
          if (emitMap(name, fam, els)) mapExists.add(name);
        }
      }
      outFlows = flowLookups(outDir);
      egress = outsideLookups("egress", self);
      chains.push({
        name: "output",
        hook: "output",
        rules: [
          ...preamble("output"),
          ...outFlows.map((l) => flowRule(l, ORIGINAL, false)),
          ...egress.map((o) => outsideRule(o, ORIGINAL, false)),
          ...destModes(ORIGINAL, false),
          `goto ${modeChain(m)}`,
        ],
      });
    }
    const recheckRules = (view: View) => [
      ...[...inFlows, ...outFlows].map((l) => flowRule(l, view, true)),
      ...[...ingress, ...egress].map((o) => outsideRule(o, view, true)),
      // an inbound connection's destination is this host: not in the map, so this host's mode
      ...destModes(view, true),
      recheckVerdict(m),
    ];
    // Input sees replies only of connections this host opened; without an output chain
    // those are not filtered at all, so neither are their replies.
    recheck.original = [
      hasOutput ? `ct direction reply goto zt_recheck_reply` : `ct direction reply accept`,
      ...recheckRules(ORIGINAL),
    ];
    if (hasOutput) recheck.reply = recheckRules(REPLY);
  }

  // The limit gates only the log rule (its counter counts what was logged): every packet goes
  // on to the verdict rule below it.
  const log = model.log ?? DEFAULT_LOG_LIMIT;
  const logLimit = `limit rate ${log.rate.count}/${log.rate.unit} burst ${log.burst} packets`;
  const plain: { name: string; rules: string[] }[] = [
    {
      name: "zt_enforce",
      rules: [
        `${logLimit} counter log prefix "ZT-DROP " comment "ZT-DROP logged (rate-limited)"`,
        `counter name "zt_drop" drop`,
      ],
    },
    {
      name: "zt_audit",
      rules: [
        `${logLimit} counter log prefix "ZT-WOULD-DROP " comment "ZT-WOULD-DROP logged (rate-limited)"`,
        `counter name "zt_would_drop" ct mark set ct mark or ${MARK} accept`,
      ],
    },
  ];
  if (anyEnforce) {
    // not logged: a reply packet's addresses would read as a bogus flow to `zt seg learn`
    plain.push({ name: "zt_cut", rules: [`counter name "zt_cut" drop`] });
    if (recheck.reply) plain.push({ name: "zt_recheck_reply", rules: recheck.reply });
    plain.push({ name: "zt_recheck", rules: recheck.original });
  }
  plain.forEach((c, i) => {
    out.push(...(i > 0 ? [``] : []), `\tchain ${c.name} {`);
    for (const r of c.rules) out.push(`\t\t${r}`);
    out.push(`\t}`);
    rules += c.rules.length;
  });
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
