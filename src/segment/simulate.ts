import { FlowEvaluator } from "./evaluate-flow.js";
import type { ObservedFlow } from "./flow-inventory.js";
import { segmentModeOf, type SegMode, type SegModel } from "./model.js";
import { formatPortSpec } from "./port-spec.js";

export interface DroppedGroup {
  from: string;
  to: string;
  /** The mode the deciding segment is in now: `audit` means it would drop once enforced. */
  mode: SegMode;
  count: number;
  ports: { port: string; count: number }[];
  sources: string[];
}

export interface SimulateResult {
  flows: number;
  packets: number;
  allowed: number;
  /** Packets allowed by `egress` / `ingress` (to or from outside the model). */
  egress: number;
  /** Packets the candidate would drop (enforced) or would drop once enforced (audit). */
  dropped: number;
  groups: DroppedGroup[];
}

export const OUTSIDE = "(outside)";

/**
 * Replays observed flows against a candidate model and groups what it would drop by
 * segment pair: the check to run before switching a segment from audit to enforce. Pure.
 */
export function simulateFlows(model: SegModel, observed: readonly ObservedFlow[]): SimulateResult {
  const ev = new FlowEvaluator(model);
  const groups = new Map<
    string,
    DroppedGroup & { portMap: Map<string, number>; srcSet: Set<string> }
  >();
  let allowed = 0;
  let egress = 0;
  let dropped = 0;
  let packets = 0;
  for (const f of observed) {
    packets += f.count;
    const probe =
      f.port === undefined
        ? { src: f.src, dst: f.dst, proto: f.proto }
        : { src: f.src, dst: f.dst, proto: f.proto, port: f.port };
    const v = ev.evaluate(probe);
    if (v.verdict === "allow") {
      allowed += f.count;
      continue;
    }
    if (v.verdict === "egress" || v.verdict === "ingress") {
      egress += f.count;
      continue;
    }
    dropped += f.count;
    const from = v.from ?? OUTSIDE;
    const to = v.to ?? OUTSIDE;
    const modeSeg = v.to ?? v.from;
    const mode = modeSeg === undefined ? model.mode.default : segmentModeOf(model, modeSeg);
    const key = `${from} ${to}`;
    let g = groups.get(key);
    if (!g)
      groups.set(
        key,
        (g = {
          from,
          to,
          mode,
          count: 0,
          ports: [],
          sources: [],
          portMap: new Map(),
          srcSet: new Set(),
        }),
      );
    g.count += f.count;
    const port = formatPortSpec(
      f.proto === "icmp" ? { proto: "icmp" } : { proto: f.proto, lo: f.port!, hi: f.port! },
    );
    g.portMap.set(port, (g.portMap.get(port) ?? 0) + f.count);
    if (g.srcSet.size < 20) g.srcSet.add(f.src);
  }
  const out: DroppedGroup[] = [...groups.values()]
    .sort((a, b) => b.count - a.count || cmp(a.from, b.from) || cmp(a.to, b.to))
    .map(({ portMap, srcSet, ...g }) => ({
      ...g,
      ports: [...portMap].sort((a, b) => b[1] - a[1]).map(([port, count]) => ({ port, count })),
      sources: [...srcSet].sort(),
    }));
  return { flows: observed.length, packets, allowed, egress, dropped, groups: out };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
