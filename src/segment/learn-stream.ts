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
  /**
   * Other inputs hold flows (a learned file given to `zt seg simulate` with them): logs
   * with no flow line in any are reported in `unparsedFiles`, not refused.
   */
  othersHaveFlows?: boolean;
}

export interface LearnStats {
  files: number;
  lines: number;
  parsed: number;
  /** Parsed packets of new flows past `maxFlows`: counted, not aggregated. */
  unaggregated: number;
  /** Files that held no flow line (others did: with none at all, nothing is returned unless `othersHaveFlows`). */
  unparsedFiles: { path: string; lines: number }[];
}

/** What `zt seg learn` reads, for the errors that say a file held none of it. */
const LOG_FORMATS = "nftables/ufw `log prefix` lines or JSON flow records";

const linesText = (n: number) => `${n.toLocaleString("en-US")} line${n === 1 ? "" : "s"}`;

/** "no flow line" for one file, as a warning's or an error's text. */
export function describeUnparsedFile(f: { path: string; lines: number }): string {
  return f.lines === 0
    ? `${f.path}: no flow line could be parsed: the file is empty`
    : `${f.path}: no flow line could be parsed in its ${linesText(f.lines)}`;
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
    } catch (e) {
      // a permission or a path through a file is told as it is, not as "not found"
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      throw new ZtError("ZT_NOT_FOUND", `${p}: cannot read`);
    }
    // Named here: a read of a directory fails with an error that carries no path.
    if (st.isDirectory())
      throw new ZtError("ZT_USAGE", `${p}: a directory, not a log file`, { path: p });
    // A device (/dev/zero, a terminal) never ends: log files are files or pipes.
    if (st.isCharacterDevice() || st.isBlockDevice())
      throw new ZtError("ZT_BAD_REQUEST", `${p}: a device, not a log file (or a pipe)`);
    bytesTotal += st.size;
  }
  let bytesRead = 0;
  let lines = 0;
  const perFile: { path: string; lines: number; parsed: number }[] = [];
  for (const p of paths) {
    const linesBefore = lines;
    const parsedBefore = aggregator.packets;
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
    perFile.push({
      path: p,
      lines: lines - linesBefore,
      parsed: aggregator.packets - parsedBefore,
    });
  }
  const unparsedFiles = perFile
    .filter((f) => f.parsed === 0)
    .map(({ path, lines }) => ({ path, lines }));
  // Nothing to learn or to simulate: the wrong file, or a log without zt's `log prefix`
  // lines. An empty inventory (or a check that passes having seen nothing) would hide it.
  if (aggregator.packets === 0 && opts.othersHaveFlows !== true) {
    const what =
      unparsedFiles.length === 1
        ? describeUnparsedFile(unparsedFiles[0]!)
        : `${paths.join(", ")}: no flow line could be parsed in any of their ${linesText(lines)}`;
    throw new ZtError("ZT_BAD_REQUEST", `${what} (expected ${LOG_FORMATS})`, {
      reason: "no-flow-lines",
    });
  }
  return {
    aggregator,
    stats: {
      files: paths.length,
      lines,
      parsed: aggregator.packets,
      unaggregated: aggregator.unaggregated,
      unparsedFiles,
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
