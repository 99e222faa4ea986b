/** I/O helpers of `zt seg learn` / `zt seg simulate`: progress bar, output documents, observed-flow files. */
import { stringify, parse as parseYaml } from "yaml";
import { z } from "zod";
import { systemClock } from "../core/clock.js";
import { isZtError, ZtError } from "../core/errors.js";
import { readInputFile } from "../core/read-input-file.js";
import type { LearnProgress, LearnStats } from "./learn-stream.js";
import { aggregateLogFiles } from "./learn-stream.js";
import { DEFAULT_MAX_FLOWS, type LearnResult, type ObservedFlow } from "./flow-inventory.js";
import { canonicalAddress } from "./ip-range.js";
import type { SegModel } from "./model.js";

/** A progress bar on stderr, only when stderr is a terminal; redrawn at most 10 times a second. */
export function progressBar(): { update: (p: LearnProgress) => void; done: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, done: () => undefined };
  let last = 0;
  const draw = (p: LearnProgress) => {
    const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesRead / p.bytesTotal) : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    process.stderr.write(
      `\r[${"#".repeat(fill)}${".".repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}%  ${p.lines.toLocaleString("en-US")} lines`,
    );
  };
  let lastP: LearnProgress | undefined;
  return {
    update: (p) => {
      lastP = p;
      const now = systemClock.now();
      if (now - last < 100) return;
      last = now;
      draw(p);
    },
    done: () => {
      if (lastP) draw(lastP);
      process.stderr.write("\n");
    },
  };
}

function isoOrUndefined(t: number | undefined): string | undefined {
  return t === undefined ? undefined : new Date(t).toISOString();
}

function observedForOutput(o: ObservedFlow[]) {
  return o.map((f) => ({
    src: f.src,
    dst: f.dst,
    proto: f.proto,
    ...(f.port !== undefined ? { port: f.port } : {}),
    count: f.count,
    ...(f.first !== undefined ? { first_seen: isoOrUndefined(f.first) } : {}),
    ...(f.last !== undefined ? { last_seen: isoOrUndefined(f.last) } : {}),
  }));
}

/** A ready-to-edit segments.yaml: the model's segments plus proposals, learned flows, audit mode. */
export function proposedModelYaml(model: SegModel | undefined, r: LearnResult): string {
  const segments: Record<string, unknown> = {};
  for (const s of model?.segments ?? []) {
    segments[s.name] = {
      hosts: s.hosts.map((h) => (h.name ? { name: h.name, ip: h.text } : h.text)),
      // A Kubernetes segment stays one (it was proposed as an empty list of hosts).
      ...(s.k8s ? { k8s: { namespace: s.k8s.namespace, podSelector: s.k8s.podSelector } } : {}),
    };
  }
  Object.assign(segments, r.segments);
  const doc = {
    segments,
    flows: r.flows.map((f) => ({
      from: f.from,
      to: f.to,
      ports: f.ports,
      comment: `learned: ${f.count} packets${f.first_seen ? `, ${f.first_seen} .. ${f.last_seen}` : ""}`,
    })),
    ...(Object.keys(r.egress).length ? { egress: r.egress } : {}),
    ...(Object.keys(r.ingress).length ? { ingress: r.ingress } : {}),
    mode: { default: "audit" },
    ...(model?.log
      ? {
          log: {
            rate: `${model.log.rate.count}/${model.log.rate.unit}`,
            burst: model.log.burst,
          },
        }
      : {}),
  };
  return (
    "# proposed by `zt seg learn`: review, then `zt seg simulate` before enforcing\n" +
    stringify(doc, { lineWidth: 0 })
  );
}

const observedFileSchema = z.object({
  observed: z.array(
    z.object({
      src: z.string(),
      dst: z.string(),
      proto: z.enum(["tcp", "udp", "icmp"]),
      port: z.number().int().min(0).max(65535).optional(),
      count: z.number().int().positive().default(1),
    }),
  ),
});

/**
 * Reads observed flows: a `zt seg learn` output (YAML/JSON with `observed:`) or raw log
 * files. A log with no flow line in it, among inputs that have some, is passed to
 * `onUnparsedFile` (the CLI warns, naming it); with no flow in any input, nothing could
 * be simulated, and it is refused as `zt seg learn` refuses it.
 */
export async function readObservedFiles(
  paths: string[],
  options: {
    maxFlows?: number;
    onUnparsedFile?: (f: { path: string; lines: number }) => void;
  } = {},
): Promise<ObservedFlow[]> {
  const logs: string[] = [];
  const out: ObservedFlow[] = [];
  for (const p of paths) {
    if (!/\.(ya?ml|json)$/.test(p)) {
      logs.push(p);
      continue;
    }
    let text: string;
    try {
      text = readInputFile(p);
    } catch (e) {
      // a directory or a permission is told as it is, not as "not found"
      if (isZtError(e) || (e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      throw new ZtError("ZT_NOT_FOUND", `${p}: cannot read`);
    }
    let raw: unknown;
    try {
      raw = parseYaml(text);
    } catch (e) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `${p}: not YAML/JSON: ${(e as Error).message.split("\n")[0]}`,
      );
    }
    const parsed = observedFileSchema.safeParse(raw);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `${p}: ${i.path.map(String).join(".") || "(top)"}: ${i.message}`,
      );
    }
    for (const [i, f] of parsed.data.observed.entries()) {
      const addr = (key: "src" | "dst") => {
        const c = canonicalAddress(f[key]);
        if (c === undefined)
          throw new ZtError(
            "ZT_BAD_REQUEST",
            `${p}: observed.${i}.${key}: not an IP address: ${JSON.stringify(f[key])}`,
          );
        return c;
      };
      const base = { src: addr("src"), dst: addr("dst"), proto: f.proto, count: f.count };
      out.push(f.port === undefined ? base : { ...base, port: f.port });
    }
  }
  if (logs.length) {
    const { aggregator, stats } = await aggregateLogFiles(logs, {
      year: new Date(systemClock.now()).getUTCFullYear(),
      ...(options.maxFlows !== undefined ? { maxFlows: options.maxFlows } : {}),
      othersHaveFlows: out.length > 0,
    });
    for (const f of stats.unparsedFiles) options.onUnparsedFile?.(f);
    if (stats.unaggregated > 0) {
      // a check that saw only part of the traffic must not pass
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `${logs.join(", ")}: more than ${(options.maxFlows ?? DEFAULT_MAX_FLOWS).toLocaleString("en-US")} distinct flows (address pair and service): simulating only part of them could miss drops; split or filter the logs (e.g. \`zt seg learn\` them per file)`,
      );
    }
    out.push(...aggregator.flows());
  }
  if (out.length === 0)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${paths.join(", ")}: no observed flows in ${paths.length === 1 ? "it" : "any of them"}; nothing to simulate`,
      { reason: "no-flow-lines" },
    );
  return out;
}

/** The document `zt seg learn` writes: summary, inventory, proposed flows and egress, observed flows. */
export function learnDocument(result: LearnResult, stats: LearnStats): Record<string, unknown> {
  return {
    summary: {
      files: stats.files,
      lines: stats.lines,
      parsed: stats.parsed,
      ...(stats.unaggregated > 0 ? { unaggregated: stats.unaggregated } : {}),
      observed_flows: result.observed.length,
    },
    inventory: result.inventory,
    flows: result.flows,
    egress: result.egress,
    ingress: result.ingress,
    ...(Object.keys(result.segments).length ? { proposed_segments: result.segments } : {}),
    observed: observedForOutput(result.observed),
  };
}
