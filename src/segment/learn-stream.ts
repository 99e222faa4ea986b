import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { ZtError } from "../core/errors.js";
import { FlowAggregator, summariseFlows, type LearnResult } from "./flow-inventory.js";
import { LogLineParser } from "./log-line.js";
import type { SegmentIndex } from "./segment-index.js";

export interface LearnProgress {
  bytesRead: number;
  bytesTotal: number;
  lines: number;
}

export interface LearnOptions {
  index?: SegmentIndex;
  /** The year for RFC 3164 timestamps, which carry none. */
  year: number;
  onProgress?: (p: LearnProgress) => void;
}

export interface LearnStats {
  files: number;
  lines: number;
  parsed: number;
}

/**
 * Streams log files of any size line by line (constant memory apart from the aggregate),
 * parses kernel log / JSON flow lines and aggregates them.
 */
export async function aggregateLogFiles(
  paths: readonly string[],
  opts: LearnOptions,
): Promise<{ aggregator: FlowAggregator; stats: LearnStats }> {
  const parser = new LogLineParser({ year: opts.year });
  const aggregator = new FlowAggregator();
  let bytesTotal = 0;
  for (const p of paths) {
    try {
      bytesTotal += (await stat(p)).size;
    } catch {
      throw new ZtError("ZT_NOT_FOUND", `${p}: cannot read`);
    }
  }
  let bytesRead = 0;
  let lines = 0;
  for (const p of paths) {
    let rest = "";
    const stream = createReadStream(p, { encoding: "utf8", highWaterMark: 1 << 20 });
    for await (const chunk of stream as AsyncIterable<string>) {
      bytesRead += Buffer.byteLength(chunk);
      let text = rest + chunk;
      let start = 0;
      let nl: number;
      while ((nl = text.indexOf("\n", start)) >= 0) {
        lines++;
        const pkt = parser.parse(text.slice(start, nl));
        if (pkt) aggregator.add(pkt);
        start = nl + 1;
      }
      rest = text.slice(start);
      text = "";
      opts.onProgress?.({ bytesRead, bytesTotal, lines });
    }
    if (rest.length > 0) {
      lines++;
      const pkt = parser.parse(rest);
      if (pkt) aggregator.add(pkt);
    }
  }
  return { aggregator, stats: { files: paths.length, lines, parsed: aggregator.packets } };
}

/** `zt seg learn`: logs in, inventory + proposed least-privilege flows out. */
export async function learnFromFiles(
  paths: readonly string[],
  opts: LearnOptions,
): Promise<{ result: LearnResult; stats: LearnStats }> {
  const { aggregator, stats } = await aggregateLogFiles(paths, opts);
  return { result: summariseFlows(aggregator.flows(), opts.index), stats };
}
