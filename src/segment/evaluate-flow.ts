import { ANY_SEGMENT, segmentModeOf, type SegModel } from "./model.js";
import { portSpecMatches, type SegProto } from "./port-spec.js";
import { SegmentIndex } from "./segment-index.js";

/** One observed or probed connection attempt. */
export interface FlowProbe {
  src: string;
  dst: string;
  proto: SegProto;
  /** Destination port (tcp/udp). */
  port?: number;
}

export type FlowVerdict =
  | { verdict: "allow"; flow: number; rateLimited: boolean; from?: string; to?: string }
  | { verdict: "egress"; from: string }
  | { verdict: "ingress"; to: string }
  | { verdict: "drop" | "would-drop"; from?: string; to?: string };

/**
 * Decides what the compiled router ruleset does with the first packet of a connection:
 * the model's reference semantics, used by `zt seg simulate` and as the oracle of the
 * packet tests. A flow with a rate limit counts as allowed (below its limit).
 */
export class FlowEvaluator {
  readonly #model: SegModel;
  readonly #index: SegmentIndex;

  constructor(model: SegModel) {
    this.#model = model;
    this.#index = new SegmentIndex(model);
  }

  segmentOf(addr: string): string | undefined {
    return this.#index.lookup(addr);
  }

  evaluate(p: FlowProbe): FlowVerdict {
    const from = this.#index.lookup(p.src);
    const to = this.#index.lookup(p.dst);
    const seg = (v: FlowVerdict, f?: string, t?: string): FlowVerdict => {
      if (f !== undefined) (v as { from?: string }).from = f;
      if (t !== undefined) (v as { to?: string }).to = t;
      return v;
    };
    if (from !== undefined && to !== undefined) {
      let limited: number | undefined;
      for (const f of this.#model.flows) {
        if (f.from !== ANY_SEGMENT && f.from !== from) continue;
        if (f.to !== ANY_SEGMENT && f.to !== to) continue;
        if (!f.ports.some((q) => portSpecMatches(q, p.proto, p.port))) continue;
        if (!f.rate) return seg({ verdict: "allow", flow: f.index, rateLimited: false }, from, to);
        limited ??= f.index;
      }
      if (limited !== undefined)
        return seg({ verdict: "allow", flow: limited, rateLimited: true }, from, to);
    }
    if (from !== undefined && to === undefined) {
      const eg = this.#model.egress.get(from);
      if (eg?.some((q) => portSpecMatches(q, p.proto, p.port))) return { verdict: "egress", from };
    }
    if (from === undefined && to !== undefined) {
      const ing = this.#model.ingress.get(to);
      if (ing?.some((q) => portSpecMatches(q, p.proto, p.port))) return { verdict: "ingress", to };
    }
    const modeSeg = to ?? from;
    const mode =
      modeSeg === undefined ? this.#model.mode.default : segmentModeOf(this.#model, modeSeg);
    return seg({ verdict: mode === "enforce" ? "drop" : "would-drop" }, from, to);
  }
}
