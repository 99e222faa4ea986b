import { formatRange, type IpRange } from "./ip-range.js";
import { ANY_SEGMENT, type SegFinding, type SegFlow, type SegModel } from "./model.js";
import { formatPortSpec, portSpecCovers } from "./port-spec.js";

/** A finding before its line is looked up in the YAML document. */
export type RawFinding = SegFinding & { pathParts: PropertyKey[] };

function finding(
  severity: SegFinding["severity"],
  code: SegFinding["code"],
  pathParts: PropertyKey[],
  message: string,
): RawFinding {
  const path = pathParts
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join("");
  return { severity, code, path, pathParts, line: 0, message };
}

/**
 * Checks a structurally valid model for overlapping segments (error), hosts listed twice,
 * empty segments, and flows that can never match: duplicates and flows whose every port
 * is already allowed by a broader flow without a rate limit (warnings).
 */
export function analyseModel(model: SegModel): RawFinding[] {
  const out: RawFinding[] = [];
  out.push(...findOverlaps(model));
  out.push(...findK8sOverlaps(model));
  const empty = new Set<string>();
  for (const s of model.segments) {
    if (s.hosts.length === 0 && !s.k8s) {
      empty.add(s.name);
      out.push(
        finding(
          "warning",
          "empty-segment",
          ["segments", s.name],
          "segment has no hosts: no nftables rule can match it",
        ),
      );
    }
  }
  for (const f of model.flows) {
    if (empty.has(f.from)) {
      out.push(
        finding(
          "warning",
          "unreachable-flow",
          ["flows", f.index, "from"],
          `unreachable: segment "${f.from}" has no hosts`,
        ),
      );
    }
  }
  out.push(...findShadowedFlows(model.flows));
  return out;
}

function findOverlaps(model: SegModel): RawFinding[] {
  const out: RawFinding[] = [];
  const all: { range: IpRange; seg: string; host: number }[] = [];
  for (const s of model.segments)
    s.hosts.forEach((h, i) => all.push({ range: h.range, seg: s.name, host: i }));
  all.sort(
    (a, b) =>
      a.range.family - b.range.family ||
      (a.range.start < b.range.start ? -1 : a.range.start > b.range.start ? 1 : 0),
  );
  let cur: (typeof all)[number] | undefined;
  for (const e of all) {
    if (cur && cur.range.family === e.range.family && e.range.start <= cur.range.end) {
      const path = ["segments", e.seg, "hosts", e.host];
      if (cur.seg === e.seg) {
        out.push(
          finding(
            "warning",
            "duplicate-host",
            path,
            `${formatRange(e.range)} overlaps ${formatRange(cur.range)} in the same segment`,
          ),
        );
      } else {
        out.push(
          finding(
            "error",
            "overlap",
            path,
            `${formatRange(e.range)} overlaps ${formatRange(cur.range)} of segment "${cur.seg}": an address must belong to one segment`,
          ),
        );
      }
      if (e.range.end > cur.range.end) cur = e;
    } else {
      cur = e;
    }
  }
  return out;
}

function selectorText(sel: Record<string, string>): string {
  const e = Object.entries(sel);
  return e.length === 0 ? "{} (every pod)" : `{ ${e.map(([k, v]) => `${k}: ${v}`).join(", ")} }`;
}

/**
 * Kubernetes segments of one namespace: NetworkPolicies add up, so a pod two segments select
 * gets the flows of both. When every label of one selector is also in the other (an empty
 * selector is in every one), every pod of the second belongs to both: an error, as for
 * overlapping addresses. Selectors that share no key with different values may overlap (a
 * pod can carry both sets of labels): a warning.
 */
function findK8sOverlaps(model: SegModel): RawFinding[] {
  const out: RawFinding[] = [];
  const segs = model.segments.filter((s) => s.k8s);
  const within = (a: Record<string, string>, b: Record<string, string>) =>
    Object.entries(a).every(([k, v]) => Object.hasOwn(b, k) && b[k] === v);
  for (let j = 0; j < segs.length; j++) {
    const b = segs[j]!;
    for (let i = 0; i < j; i++) {
      const a = segs[i]!;
      if (a.k8s!.namespace !== b.k8s!.namespace) continue;
      const sa = a.k8s!.podSelector;
      const sb = b.k8s!.podSelector;
      // own keys only: `in` found "constructor" on every object, so { constructor: x } was
      // taken as disjoint from {} (every pod)
      if (Object.keys(sa).some((k) => Object.hasOwn(sb, k) && sa[k] !== sb[k])) continue; // disjoint
      const certain = within(sa, sb) || within(sb, sa);
      out.push(
        finding(
          certain ? "error" : "warning",
          "overlap",
          ["segments", b.name, "k8s", "podSelector"],
          `${selectorText(sb)} ${certain ? "overlaps" : "may overlap"} ${selectorText(sa)} of segment "${a.name}" in namespace "${b.k8s!.namespace}": ${
            certain
              ? "a pod must belong to one segment (NetworkPolicies add up: it would get the flows of both)"
              : "a pod with both sets of labels would get the flows of both segments (select on one label key with different values)"
          }`,
        ),
      );
    }
  }
  return out;
}

function findShadowedFlows(flows: readonly SegFlow[]): RawFinding[] {
  const out: RawFinding[] = [];
  const byPair = new Map<string, SegFlow[]>();
  for (const f of flows) {
    const k = `${f.from}\u0000${f.to}`;
    const list = byPair.get(k);
    if (list) list.push(f);
    else byPair.set(k, [f]);
  }
  for (const b of flows) {
    const candidates: SegFlow[] = [];
    for (const from of b.from === ANY_SEGMENT ? [ANY_SEGMENT] : [b.from, ANY_SEGMENT]) {
      for (const to of b.to === ANY_SEGMENT ? [ANY_SEGMENT] : [b.to, ANY_SEGMENT]) {
        for (const a of byPair.get(`${from}\u0000${to}`) ?? [])
          if (a !== b && !a.rate) candidates.push(a);
      }
    }
    if (candidates.length === 0 || b.ports.length === 0) continue;
    const coverers = new Set<number>();
    let covered = true;
    for (const p of b.ports) {
      const a = candidates.find((c) => c.ports.some((q) => portSpecCovers(q, p)));
      if (!a) {
        covered = false;
        break;
      }
      coverers.add(a.index);
    }
    if (!covered) continue;
    const identical = candidates.find(
      (a) => a.from === b.from && a.to === b.to && !b.rate && samePorts(a, b),
    );
    if (identical) {
      if (identical.index < b.index) {
        out.push(
          finding(
            "warning",
            "duplicate-flow",
            ["flows", b.index],
            `duplicate of flows[${identical.index}]`,
          ),
        );
      }
      continue;
    }
    const list = [...coverers].map((i) => `flows[${i}]`).join(", ");
    const what = b.rate ? "its rate limit never applies" : "unreachable";
    out.push(
      finding(
        "warning",
        "unreachable-flow",
        ["flows", b.index],
        `${what}: ${b.ports.map(formatPortSpec).join(", ")} from "${b.from}" to "${b.to}" is already allowed by ${list}`,
      ),
    );
  }
  return out;
}

function samePorts(a: SegFlow, b: SegFlow): boolean {
  const s = (f: SegFlow) => f.ports.map(formatPortSpec).sort().join(",");
  return s(a) === s(b);
}
