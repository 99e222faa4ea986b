import type { IpRange } from "./ip-range.js";
import type { PortSpec } from "./port-spec.js";

export type SegMode = "audit" | "enforce";

/** `*` in `from` / `to` stands for every segment of the model. */
export const ANY_SEGMENT = "*";

/** One host entry of a segment: an address or CIDR, optionally named (`--host NAME`). */
export interface SegHost {
  name?: string;
  text: string;
  range: IpRange;
}

/** Kubernetes selectors for a segment (`--target k8s`). */
export interface SegK8s {
  namespace: string;
  podSelector: Record<string, string>;
}

export interface Segment {
  name: string;
  hosts: SegHost[];
  /** The hosts as sorted, merged ranges (both families). */
  ranges: IpRange[];
  k8s?: SegK8s;
  line: number;
}

export interface FlowRate {
  count: number;
  unit: "second" | "minute" | "hour" | "day";
}

/** An allowed, directional flow. */
export interface SegFlow {
  index: number;
  from: string;
  to: string;
  ports: PortSpec[];
  rate?: FlowRate;
  burst?: number;
  comment?: string;
  line: number;
}

/** A validated segmentation model (`segments.yaml`). */
export interface SegModel {
  segments: Segment[];
  flows: SegFlow[];
  /** Per segment: services it may reach outside the model. */
  egress: Map<string, PortSpec[]>;
  /** Per segment: services it offers to addresses outside the model. */
  ingress: Map<string, PortSpec[]>;
  mode: { default: SegMode; perSegment: Map<string, SegMode> };
  /** `log:` as written in the model; without it, DEFAULT_LOG_LIMIT applies. */
  log?: LogLimit;
}

/**
 * How many packets per unit the drop / would-drop chains write to the kernel log (nft
 * `limit rate … log`, one bucket per chain). Only the logging is limited: past the rate
 * packets are still dropped (or accepted by audit) and counted, just not logged.
 */
export interface LogLimit {
  rate: FlowRate;
  /** Packets logged at once above the rate (nft `burst N packets`). */
  burst: number;
}

/** A port scan must not flood the kernel log: 20 lines a second, bursts of 100. */
export const DEFAULT_LOG_LIMIT: LogLimit = { rate: { count: 20, unit: "second" }, burst: 100 };

export type FindingSeverity = "error" | "warning";

/** A validation or analysis finding, located in the model file. */
export interface SegFinding {
  severity: FindingSeverity;
  code:
    | "schema"
    | "bad-address"
    | "bad-port"
    | "bad-rate"
    | "unknown-segment"
    | "overlap"
    | "mode-conflict"
    | "duplicate-flow"
    | "unreachable-flow"
    | "empty-segment"
    | "duplicate-host"
    | "reserved-name"
    | "bad-k8s-name";
  path: string;
  line: number;
  message: string;
}

export function segmentModeOf(model: SegModel, segment: string): SegMode {
  return model.mode.perSegment.get(segment) ?? model.mode.default;
}

export function formatFinding(file: string, f: SegFinding): string {
  return `${file}:${f.line}: ${f.path}: ${f.message}`;
}
