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
  /** The most distinct flows kept (default DEFAULT_MAX_FLOWS). */
  maxFlows?: number;
}

export interface LearnStats {
  files: number;
  lines: number;
  parsed: number;
  /** Parsed packets of new flows past `maxFlows`: counted, not aggregated. */
  unaggregated: number;
}

/** The longest log line read; a kernel log or flow record line is well under 1 KiB. */
const MAX_LINE = 64 * 1024;

/**
 * Streams log files of any size line by line (constant memory apart from the aggregate),
 * parses kernel log / JSON flow lines and aggregates them.
 */
export async function aggregateLogFiles(
  paths: readonly string[],
  opts: LearnOptions,
): Promise<{ aggregator: FlowAggregator; stats: LearnStats }> {
  const parser = new LogLineParser({ year: opts.year });
  const aggregator = new FlowAggregator(
    opts.maxFlows === undefined ? {} : { maxFlows: opts.maxFlows },
  );
  let bytesTotal = 0;
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch {
      throw new ZtError("ZT_NOT_FOUND", `${p}: cannot read`);
    }
    // A device (/dev/zero, a terminal) never ends: log files are files or pipes.
    if (st.isCharacterDevice() || st.isBlockDevice())
      throw new ZtError("ZT_BAD_REQUEST", `${p}: a device, not a log file (or a pipe)`);
    bytesTotal += st.size;
  }
  let bytesRead = 0;
  let lines = 0;
  for (const p of paths) {
    let rest = "";
    /** Inside a line past MAX_LINE: dropped up to its newline, so memory stays bounded. */
    let skipping = false;
    const stream = createReadStream(p, { encoding: "utf8", highWaterMark: 1 << 20 });
    for await (const chunk of stream as AsyncIterable<string>) {
      bytesRead += Buffer.byteLength(chunk);
      let text = rest + chunk;
      let start = 0;
      let nl: number;
      while ((nl = text.indexOf("\n", start)) >= 0) {
        lines++;
        const pkt = skipping ? undefined : parser.parse(text.slice(start, nl));
        skipping = false;
        if (pkt) aggregator.add(pkt);
        start = nl + 1;
      }
      rest = text.slice(start);
      if (rest.length > MAX_LINE) {
        rest = "";
        skipping = true;
      }
      text = "";
      opts.onProgress?.({ bytesRead, bytesTotal, lines });
    }
    if (rest.length > 0 || skipping) {
      lines++;
      const pkt = skipping ? undefined : parser.parse(rest);
      if (pkt) aggregator.add(pkt);
    }
  }
  return {
    aggregator,
    stats: {
      files: paths.length,
      lines,
      parsed: aggregator.packets,
      unaggregated: aggregator.unaggregated,
    },
  };
}

/** `zt seg learn`: logs in, inventory + proposed least-privilege flows out. */
export async function learnFromFiles(
  paths: readonly string[],
  opts: LearnOptions,
): Promise<{ result: LearnResult; stats: LearnStats }> {
  const { aggregator, stats } = await aggregateLogFiles(paths, opts);
  return { result: summariseFlows(aggregator.flows(), opts.index), stats };
}
