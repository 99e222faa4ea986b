import { LineCounter, parseDocument, isNode, type Document } from "yaml";
import { ZtError } from "../core/errors.js";
import { mergeRanges, parseCidr } from "./ip-range.js";
import {
  ANY_SEGMENT,
  formatFinding,
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
  const parsed = segModelSchema.safeParse(doc.toJS({ maxAliasCount: 100 }) ?? {});
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
    if (seg?.k8s) s.k8s = { namespace: seg.k8s.namespace, podSelector: seg.k8s.podSelector };
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
  for (const { pathParts, ...f } of analyseModel(model))
    findings.push({ ...f, line: lineOf(pathParts) });
  const errors = findings.filter((f) => f.severity === "error");
  if (errors.length > 0) throw invalid(fileName, errors);
  return { model, findings };
}

function invalid(fileName: string, errors: SegFinding[]): ZtError {
  const lines = [...errors].sort((a, b) => a.line - b.line).map((e) => formatFinding(fileName, e));
  return new ZtError("ZT_SEG_MODEL_INVALID", lines.join("\n"), { errors: lines });
}
