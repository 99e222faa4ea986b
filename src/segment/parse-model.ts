import { LineCounter, parseDocument, isNode, type Document } from "yaml";
import { ZtError } from "../core/errors.js";
import { mergeRanges, parseCidr } from "./ip-range.js";
import {
  ANY_SEGMENT,
  DEFAULT_LOG_LIMIT,
  formatFinding,
  type LogLimit,
  type FlowRate,
  type SegFinding,
  type SegFlow,
  type SegHost,
  type SegMode,
  type SegModel,
  type Segment,
} from "./model.js";
import { SEGMENT_NAME_RE, segModelSchema } from "./model-schema.js";
import { parsePortSpec, type PortSpec } from "./port-spec.js";
import { analyseModel } from "./analyse-model.js";
import {
  checkK8sLabelKey,
  checkK8sLabelValue,
  checkK8sNamespace,
  checkK8sObjectName,
} from "./k8s-names.js";

export interface ParseModelResult {
  model: SegModel;
  /** Warnings (errors throw). */
  findings: SegFinding[];
}

type Path = (string | number)[];

function pathText(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? String(p) : `.${String(p)}`;
  }
  return out === "" ? "(top)" : out;
}

/** Finds the line of the deepest YAML node along `path` (1-based). */
function lineFinder(doc: Document, counter: LineCounter): (path: readonly PropertyKey[]) => number {
  return (path) => {
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n) as Path, true);
      if (isNode(node) && node.range) return counter.linePos(node.range[0]).line;
    }
    return 1;
  };
}

const RATE_RE = /^(\d{1,9})\/(second|minute|hour|day)$/;

const UNIT_NS = {
  second: 1_000_000_000n,
  minute: 60_000_000_000n,
  hour: 3_600_000_000_000n,
  day: 86_400_000_000_000n,
};

/**
 * The largest `burst` the kernel keeps as written for a packet limit of `rate`: nft sends
 * it in 32 bits (a larger one wraps round: 4294967297 became 1), and the kernel refuses
 * (EOVERFLOW, at `nft -f`) a bucket whose size in ns, (unit / rate) × burst, passes 2^64-1
 * (`1/day burst 1000000`).
 */
function maxLimitBurst(rate: FlowRate): number {
  const perPacket = UNIT_NS[rate.unit] / BigInt(rate.count);
  const fits = ((1n << 64n) - 1n) / perPacket;
  return Number(fits < 0xffff_ffffn ? fits : 0xffff_ffffn);
}

function burstProblem(rate: FlowRate | undefined, burst: number): string | undefined {
  if (rate === undefined) return undefined;
  const max = maxLimitBurst(rate);
  if (burst <= max) return undefined;
  return `burst ${burst} is too large for rate ${rate.count}/${rate.unit}: at most ${max} packets (the kernel's limit would not keep it as written)`;
}

function closest(name: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.min(3, Math.ceil(name.length / 2));
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestD) {
      bestD = d;
      best = n;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/**
 * Parses and validates a segmentation model. Every error names the file, line and key
 * (`segments.yaml:12: flows[3].to: unknown segment "dta"`); all errors are collected
 * and thrown together as ZT_SEG_MODEL_INVALID. Warnings (duplicate or unreachable flows,
 * empty segments) are returned.
 */
export function parseSegModel(text: string, fileName = "segments.yaml"): ParseModelResult {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  const lineOf = lineFinder(doc, counter);
  const findings: SegFinding[] = [];
  const err = (code: SegFinding["code"], path: readonly PropertyKey[], message: string) =>
    findings.push({ severity: "error", code, path: pathText(path), line: lineOf(path), message });

  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line ?? 1;
    throw invalid(fileName, [
      {
        severity: "error",
        code: "schema",
        path: "(yaml)",
        line,
        message: e.message.split("\n")[0]!,
      },
    ]);
  }
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    // the yaml library throws (a ReferenceError) when aliases expand past maxAliasCount: a
    // YAML bomb is a bad model file, not an internal error
    throw invalid(fileName, [
      {
        severity: "error",
        code: "schema",
        path: "(yaml)",
        line: 1,
        message: `${(e as Error).message.split("\n")[0]!} (too many alias expansions: write the values out)`,
      },
    ]);
  }
  // zod drops a "__proto__" key without a word: a pod selector would lose that label and
  // select more pods. Refused, wherever it is, before the schema sees the document.
  for (const path of protoKeyPaths(js, [])) {
    const [top, seg, k8s, sel] = path;
    const label = top === "segments" && k8s === "k8s" && sel === "podSelector";
    err(
      label ? "bad-k8s-name" : "schema",
      path,
      label
        ? `segment ${JSON.stringify(seg)}: label key "__proto__" is not a valid Kubernetes label key: ${checkK8sLabelKey("__proto__")}`
        : `"__proto__" is not allowed as a key`,
    );
  }
  if (findings.length > 0) throw invalid(fileName, findings);
  const parsed = segModelSchema.safeParse(js);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const extra = issue.code === "unrecognized_keys" ? ` (${issue.keys.join(", ")})` : "";
      const path =
        issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]!] : issue.path;
      err(
        "schema",
        path,
        issue.message.replace(/^Invalid input: /, "") +
          (issue.code === "unrecognized_keys" ? "" : extra),
      );
    }
    throw invalid(fileName, findings);
  }
  const raw = parsed.data;

  const segments: Segment[] = [];
  for (const [name, seg] of Object.entries(raw.segments)) {
    const p = ["segments", name];
    if (name === ANY_SEGMENT || !SEGMENT_NAME_RE.test(name)) {
      err(
        "reserved-name",
        p,
        `segment names are lower-case letters, digits, - and _ (starting with a letter), got ${JSON.stringify(name)}`,
      );
      continue;
    }
    const hosts: SegHost[] = [];
    (seg?.hosts ?? []).forEach((h, i) => {
      const text = typeof h === "string" ? h : h.ip;
      const r = parseCidr(text.trim());
      if (!r.ok) {
        err("bad-address", [...p, "hosts", i], r.reason);
        return;
      }
      hosts.push(
        typeof h === "string" ? { text, range: r.range } : { name: h.name, text, range: r.range },
      );
    });
    const s: Segment = {
      name,
      hosts,
      ranges: mergeRanges(hosts.map((h) => h.range)),
      line: lineOf(p),
    };
    if (seg?.k8s) {
      const bad = k8sProblems(name, seg.k8s.namespace, seg.k8s.podSelector);
      // errors: the model is refused (the segment is kept so its flows are not "unknown")
      for (const b of bad) err("bad-k8s-name", [...p, "k8s", ...b.path], b.message);
      s.k8s = { namespace: seg.k8s.namespace, podSelector: seg.k8s.podSelector };
    }
    segments.push(s);
  }
  const names = segments.map((s) => s.name);
  const known = new Set(names);
  const checkSeg = (name: string, path: PropertyKey[], allowAny: boolean) => {
    if (allowAny && name === ANY_SEGMENT) return;
    if (!known.has(name)) {
      const hint = closest(name, names);
      err(
        "unknown-segment",
        path,
        `unknown segment ${JSON.stringify(name)}${hint ? ` (did you mean "${hint}"?)` : ""}`,
      );
    }
  };
  const parsePorts = (list: readonly string[], path: PropertyKey[]): PortSpec[] => {
    const out: PortSpec[] = [];
    list.forEach((t, i) => {
      const r = parsePortSpec(String(t));
      if (r.ok) out.push(r.spec);
      else err("bad-port", [...path, i], r.reason);
    });
    return out;
  };

  const flows: SegFlow[] = [];
  (raw.flows ?? []).forEach((f, i) => {
    const p = ["flows", i];
    checkSeg(f.from, [...p, "from"], true);
    checkSeg(f.to, [...p, "to"], true);
    const flow: SegFlow = {
      index: i,
      from: f.from,
      to: f.to,
      ports: parsePorts(f.ports, [...p, "ports"]),
      line: lineOf(p),
    };
    if (f.rate !== undefined) {
      const m = RATE_RE.exec(f.rate.trim());
      if (!m || Number(m[1]) === 0)
        err(
          "bad-rate",
          [...p, "rate"],
          `expected N/second|minute|hour|day, got ${JSON.stringify(f.rate)}`,
        );
      else flow.rate = { count: Number(m[1]), unit: m[2] as FlowRate["unit"] };
    }
    if (f.burst !== undefined) {
      if (f.rate === undefined) err("bad-rate", [...p, "burst"], "burst needs a rate");
      const bad = burstProblem(flow.rate, f.burst);
      if (bad) err("bad-rate", [...p, "burst"], bad);
      flow.burst = f.burst;
    }
    if (f.comment !== undefined) flow.comment = f.comment;
    flows.push(flow);
  });

  const outside = (key: "egress" | "ingress") => {
    const map = new Map<string, PortSpec[]>();
    for (const [name, list] of Object.entries(raw[key] ?? {})) {
      checkSeg(name, [key, name], false);
      map.set(name, parsePorts(list, [key, name]));
    }
    return map;
  };
  const egress = outside("egress");
  const ingress = outside("ingress");

  const perSegment = new Map<string, SegMode>();
  const mode = raw.mode ?? { default: "enforce" as const, enforce: [], audit: [] };
  for (const m of ["enforce", "audit"] as const) {
    mode[m].forEach((name, i) => {
      checkSeg(name, ["mode", m, i], false);
      if (perSegment.has(name) && perSegment.get(name) !== m) {
        err(
          "mode-conflict",
          ["mode", m, i],
          `segment ${JSON.stringify(name)} is listed under both mode.enforce and mode.audit`,
        );
      }
      perSegment.set(name, m);
    });
  }

  const model: SegModel = {
    segments,
    flows,
    egress,
    ingress,
    mode: { default: mode.default, perSegment },
  };
  if (raw.log) {
    const log: LogLimit = { ...DEFAULT_LOG_LIMIT };
    if (raw.log.rate !== undefined) {
      const m = RATE_RE.exec(raw.log.rate.trim());
      if (!m || Number(m[1]) === 0)
        err(
          "bad-rate",
          ["log", "rate"],
          `expected N/second|minute|hour|day (lines written to the kernel log), got ${JSON.stringify(raw.log.rate)}`,
        );
      else log.rate = { count: Number(m[1]), unit: m[2] as FlowRate["unit"] };
    }
    if (raw.log.burst !== undefined) log.burst = raw.log.burst;
    const bad = burstProblem(log.rate, log.burst);
    if (bad) err("bad-rate", ["log", raw.log.burst !== undefined ? "burst" : "rate"], bad);
    model.log = log;
  }
  for (const { pathParts, ...f } of analyseModel(model))
    findings.push({ ...f, line: lineOf(pathParts) });
  const errors = findings.filter((f) => f.severity === "error");
  if (errors.length > 0) throw invalid(fileName, errors);
  return { model, findings };
}

/** The paths of every own "__proto__" key in a parsed YAML document. */
function protoKeyPaths(v: unknown, path: (string | number)[]): (string | number)[][] {
  if (typeof v !== "object" || v === null) return [];
  if (Array.isArray(v)) return v.flatMap((x, i) => protoKeyPaths(x, [...path, i]));
  const out: (string | number)[][] = [];
  for (const k of Object.getOwnPropertyNames(v)) {
    if (k === "__proto__") out.push([...path, k]);
    else out.push(...protoKeyPaths((v as Record<string, unknown>)[k], [...path, k]));
  }
  return out;
}

/** At most 64 characters of untrusted text, quoted, for an error message. */
function shown(t: string): string {
  return JSON.stringify([...t].length > 64 ? `${[...t].slice(0, 64).join("")}…` : t);
}

/**
 * What Kubernetes would refuse in a segment's NetworkPolicy: its name (`zt-NAME`), its
 * namespace, and the keys and values of its pod selector (also used in other segments'
 * peers). Refused at load, so `--target k8s` never emits a policy the API server rejects.
 */
function k8sProblems(
  segment: string,
  namespace: string,
  podSelector: Record<string, string>,
): { path: string[]; message: string }[] {
  const out: { path: string[]; message: string }[] = [];
  const seg = `segment ${JSON.stringify(segment)}`;
  const policy = `zt-${segment}`;
  const nameBad = checkK8sObjectName(policy);
  if (nameBad)
    out.push({
      path: [],
      message: `${seg} has k8s selectors, so it names a NetworkPolicy ${JSON.stringify(policy)}, which Kubernetes refuses: ${nameBad} (rename the segment)`,
    });
  const nsBad = checkK8sNamespace(namespace);
  if (nsBad)
    out.push({
      path: ["namespace"],
      message: `${seg}: namespace ${shown(namespace)} is not a valid Kubernetes namespace name: ${nsBad}`,
    });
  for (const [key, value] of Object.entries(podSelector)) {
    const keyBad = checkK8sLabelKey(key);
    if (keyBad)
      out.push({
        path: ["podSelector", key],
        message: `${seg}: label key ${shown(key)} is not a valid Kubernetes label key: ${keyBad}`,
      });
    const valueBad = checkK8sLabelValue(value);
    if (valueBad)
      out.push({
        path: ["podSelector", key],
        message: `${seg}: label ${shown(key)} has value ${shown(value)}, not a valid Kubernetes label value: ${valueBad}`,
      });
  }
  return out;
}

function invalid(fileName: string, errors: SegFinding[]): ZtError {
  const lines = [...errors].sort((a, b) => a.line - b.line).map((e) => formatFinding(fileName, e));
  return new ZtError("ZT_SEG_MODEL_INVALID", lines.join("\n"), { errors: lines });
}
