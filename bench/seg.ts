/**
 * `npm run bench:seg` — micro-segmentation.
 *
 * 1. Compile a model of 1,000 segments and 10,000 flows to nftables (target ≤ 1 s), with the
 *    ruleset's size. Baseline: JSON.stringify of the same model (a pass over the same data).
 *    Parsing the YAML model is reported separately.
 * 2. Load that ruleset with the real `nft -f` into a network namespace made for the run
 *    (and `nft -c -f`, the check `zt seg apply` does first); a second load replaces it.
 * 3. Learn from 1,000,000 kernel log lines (target ≥ 200,000 lines/s). Baseline: reading
 *    and splitting the same file into lines without parsing them.
 *
 * Writes bench/seg.results.md.
 */
import { execFileSync } from "node:child_process";
import {
  mkdtempSync,
  rmSync,
  writeFileSync,
  createWriteStream,
  readFileSync,
  createReadStream,
} from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { once } from "node:events";
import {
  compileNftables,
  learnFromFiles,
  parseSegModel,
  SegmentIndex,
} from "../src/segment/index.js";
import { NetnsLab } from "../src/segment/netns-lab.js";

const ROOT = resolve(import.meta.dirname, "..", "..");
const SEGMENTS = Number(process.env["BENCH_SEGMENTS"] ?? 1000);
const FLOWS = Number(process.env["BENCH_FLOWS"] ?? 10_000);
const LINES = Number(process.env["BENCH_LINES"] ?? 1_000_000);
const RUNS = 5;

/** A deterministic pseudo-random generator (the bench must be repeatable). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function segAddr4(i: number, h: number): string {
  return `10.${Math.floor(i / 250) + 1}.${i % 250}.${10 + h}`;
}

function modelYaml(): string {
  const r = rng(42);
  const out = ["segments:"];
  for (let i = 0; i < SEGMENTS; i++) {
    const hosts = [segAddr4(i, 0), segAddr4(i, 1)];
    if (i % 4 === 0) hosts.push(`"fd00:${(i + 1).toString(16)}::/64"`);
    out.push(`  s${i}: { hosts: [${hosts.join(", ")}] }`);
  }
  out.push("flows:");
  const ports = [
    "tcp/443",
    "tcp/5432",
    "tcp/8000-8100",
    "udp/53",
    "tcp/22",
    "icmp",
    "tcp/9100",
    "udp/123",
  ];
  for (let f = 0; f < FLOWS; f++) {
    const a = Math.floor(r() * SEGMENTS);
    let b = Math.floor(r() * SEGMENTS);
    if (b === a) b = (b + 1) % SEGMENTS;
    const p = [ports[Math.floor(r() * ports.length)]!, `tcp/${1024 + Math.floor(r() * 60000)}`];
    out.push(
      `  - { from: s${a}, to: s${b}, ports: [${p.join(", ")}]${f % 500 === 0 ? ", rate: 100/second" : ""} }`,
    );
  }
  out.push(`  - { from: s0, to: "*", ports: [tcp/9100] }`);
  out.push(`egress:\n  s1: [udp/53, tcp/443]`);
  out.push(`mode: { default: enforce, audit: [s1, s2, s3] }`);
  return out.join("\n") + "\n";
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time<T>(fn: () => T): [T, number, number] {
  const c = process.cpuUsage();
  const t = performance.now();
  const v = fn();
  const wall = performance.now() - t;
  const u = process.cpuUsage(c);
  return [v, wall, (u.user + u.system) / 1000];
}

/** Kernel log lines for 20,000 distinct (source, destination, port) tuples with ephemeral source ports. */
async function writeLog(path: string): Promise<void> {
  const r = rng(7);
  const pool = Array.from({ length: 20_000 }, () => ({
    a: Math.floor(r() * SEGMENTS),
    b: Math.floor(r() * SEGMENTS),
    dpt: [443, 5432, 22, 9100, 8080, 53][Math.floor(r() * 6)]!,
  }));
  const ws = createWriteStream(path);
  const batch: string[] = [];
  for (let i = 0; i < LINES; i++) {
    const { a, b, dpt } = pool[Math.floor(r() * pool.length)]!;
    const stamp = `2026-11-20T10:${String(Math.floor(i / 1000) % 60).padStart(2, "0")}:${String(Math.floor(i / 17) % 60).padStart(2, "0")}.${String(i % 1000000).padStart(6, "0")}+00:00`;
    const spt = 30000 + Math.floor(r() * 30000);
    const line =
      i % 17 === 0
        ? `${stamp} gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=fd00:${(a + 1).toString(16)}::5 DST=fd00:${(b + 1).toString(16)}::9 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=${spt} DPT=${dpt} WINDOW=64800 RES=0x00 SYN URGP=0`
        : `${stamp} gw kernel: ZT-WOULD-DROP IN=eth1 OUT=eth2 MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=${segAddr4(a, 0)} DST=${segAddr4(b, 1)} LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=${i % 65536} DF PROTO=${dpt === 53 ? "UDP" : "TCP"} SPT=${spt} DPT=${dpt} WINDOW=64240 RES=0x00 SYN URGP=0`;
    batch.push(line);
    if (batch.length === 10_000) {
      if (!ws.write(batch.join("\n") + "\n")) await once(ws, "drain");
      batch.length = 0;
    }
  }
  ws.end(batch.join("\n") + (batch.length ? "\n" : ""));
  await once(ws, "finish");
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

/** The baseline for learn: the same streaming and line splitting, no parsing. */
async function splitOnly(path: string): Promise<number> {
  let lines = 0;
  let rest = "";
  for await (const chunk of createReadStream(path, {
    encoding: "utf8",
    highWaterMark: 1 << 20,
  }) as AsyncIterable<string>) {
    const text = rest + chunk;
    let start = 0;
    let nl: number;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      lines++;
      if (text.slice(start, nl).length < 0) lines--; // same slice work as the parser's loop
      start = nl + 1;
    }
    rest = text.slice(start);
  }
  return lines + (rest ? 1 : 0);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "zt-bench-seg-"));
  const rows: string[] = [];
  const log = (s: string) => {
    process.stdout.write(s + "\n");
    rows.push(s);
  };
  try {
    // 1. compile
    const yaml = modelYaml();
    const [{ model }, parseMs, parseCpu] = time(() => parseSegModel(yaml));
    const compileTimes: number[] = [];
    const compileCpu: number[] = [];
    const baseTimes: number[] = [];
    let result = compileNftables(model);
    for (let i = 0; i < RUNS; i++) {
      const [r, ms, cpu] = time(() => compileNftables(model));
      result = r;
      compileTimes.push(ms);
      compileCpu.push(cpu);
      const plain = {
        segments: model.segments.map((s) => ({
          ...s,
          ranges: s.ranges.map((x) => [x.start.toString(), x.end.toString()]),
          hosts: s.hosts.map((h) => h.text),
        })),
        flows: model.flows,
      };
      baseTimes.push(time(() => JSON.stringify(plain))[1]);
    }
    const compileMs = median(compileTimes);
    const baseMs = median(baseTimes);
    log(`## Compile: ${SEGMENTS} segments, ${model.flows.length} flows → nftables`);
    log("");
    log("| measure | value |");
    log("| --- | --- |");
    log(
      `| parse + validate segments.yaml (${(yaml.length / 1024).toFixed(0)} KiB, once), wall; CPU | ${parseMs.toFixed(0)} ms; ${parseCpu.toFixed(0)} ms |`,
    );
    log(
      `| compile (median of ${RUNS}), wall clock | **${compileMs.toFixed(0)} ms** (target ≤ 1000 ms) |`,
    );
    log(`| compile, CPU time (median) | ${median(compileCpu).toFixed(0)} ms |`);
    log(`| baseline: JSON.stringify of the same model (median) | ${baseMs.toFixed(1)} ms |`);
    log(`| ratio compile / baseline | ${(compileMs / baseMs).toFixed(1)}× |`);
    log(
      `| ruleset size | ${(result.stats.bytes / 1024 / 1024).toFixed(2)} MiB, ${result.stats.sets} sets, ${result.stats.elements} set elements, ${result.stats.rules} rules |`,
    );
    log("");

    // 2. nft apply in a namespace
    const avail = await NetnsLab.available();
    if (avail.ok) {
      const lab = await NetnsLab.create(0);
      try {
        const file = join(dir, "ruleset.nft");
        writeFileSync(file, result.text);
        const runNft = (args: string[]) => {
          const t = performance.now();
          execFileSync("ip", ["netns", "exec", lab.router, "nft", ...args], {
            stdio: ["ignore", "ignore", "inherit"],
          });
          return performance.now() - t;
        };
        const small = join(dir, "small.nft");
        writeFileSync(
          small,
          compileNftables(
            parseSegModel(readFileSync(join(ROOT, "examples", "segments.yaml"), "utf8")).model,
          ).text,
        );
        const smallMs = median([
          runNft(["-f", small]),
          runNft(["-f", small]),
          runNft(["-f", small]),
        ]);
        const checkMs = runNft(["-c", "-f", file]);
        const firstMs = runNft(["-f", file]);
        const replaceMs = runNft(["-f", file]);
        log(`## nft in a network namespace (${result.stats.elements} set elements)`);
        log("");
        log("| measure | value |");
        log("| --- | --- |");
        log(`| nft -c -f (check, as \`zt seg apply\` does first) | ${checkMs.toFixed(0)} ms |`);
        log(`| nft -f, first load | **${firstMs.toFixed(0)} ms** |`);
        log(`| nft -f, atomic replace of the loaded table | ${replaceMs.toFixed(0)} ms |`);
        log(
          `| baseline: nft -f of the 5-segment example (process start + netlink round trip) | ${smallMs.toFixed(0)} ms |`,
        );
        log(`| ratio first load / baseline | ${(firstMs / smallMs).toFixed(1)}× |`);
        log("");
      } finally {
        await lab.destroy();
      }
    } else {
      log(`## nft in a network namespace: skipped (${avail.reason})\n`);
    }

    // 3. learn
    const logPath = join(dir, "kern.log");
    await writeLog(logPath);
    const size = Number(execFileSync("stat", ["-c", "%s", logPath]).toString().trim());
    const index = new SegmentIndex(model);
    const learnTimes: number[] = [];
    const learnCpu: number[] = [];
    const splitTimes: number[] = [];
    const splitCpu: number[] = [];
    let stats = { lines: 0, parsed: 0, files: 1 };
    let flowsOut = 0;
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      let c = process.cpuUsage();
      const lines = await splitOnly(logPath);
      splitTimes.push(performance.now() - t);
      splitCpu.push(cpuMs(c));
      if (lines !== LINES) throw new Error(`split counted ${lines}`);
      t = performance.now();
      c = process.cpuUsage();
      const r = await learnFromFiles([logPath], { year: 2026, index });
      learnTimes.push(performance.now() - t);
      learnCpu.push(cpuMs(c));
      stats = r.stats;
      flowsOut = r.result.flows.length;
    }
    const learnMs = median(learnTimes);
    const splitMs = median(splitTimes);
    const learnCpuMs = median(learnCpu);
    const splitCpuMs = median(splitCpu);
    const rate = (ms: number) => Math.round((LINES / ms) * 1000).toLocaleString("en-US");
    log(
      `## Learn: ${LINES.toLocaleString("en-US")} kernel log lines (${(size / 1024 / 1024).toFixed(0)} MiB, IPv4 + IPv6)`,
    );
    log("");
    log("| measure | value |");
    log("| --- | --- |");
    log(
      `| learn (parse, map to segments, aggregate; median of 3), wall clock | ${learnMs.toFixed(0)} ms = **${rate(learnMs)} lines/s** (target ≥ 200,000) |`,
    );
    log(
      `| learn, CPU time of this process | ${learnCpuMs.toFixed(0)} ms = ${rate(learnCpuMs)} lines/s |`,
    );
    log(
      `| baseline: stream + split the same file into lines, wall clock | ${splitMs.toFixed(0)} ms = ${rate(splitMs)} lines/s |`,
    );
    log(`| baseline, CPU time | ${splitCpuMs.toFixed(0)} ms = ${rate(splitCpuMs)} lines/s |`);
    log(
      `| ratio learn / baseline (wall; CPU) | ${(learnMs / splitMs).toFixed(1)}×; ${(learnCpuMs / splitCpuMs).toFixed(1)}× |`,
    );
    log(
      `| parsed lines / proposed segment-pair flows | ${stats.parsed.toLocaleString("en-US")} / ${flowsOut.toLocaleString("en-US")} |`,
    );
    log("");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const cpu = cpus()[0]?.model ?? "unknown";
  const [l1, l5] = loadavg();
  const header = [
    "# bench:seg results",
    "",
    `Measured ${new Date().toISOString()} on ${cpus().length} CPUs (nproc), ${cpu}, Node ${process.version}, ${execFileSync("nft", ["--version"]).toString().trim()}.`,
    `Produced by \`npm run bench:seg\` (bench/seg.ts). Load average at the end of the run: ${l1!.toFixed(1)} (1 min), ${l5!.toFixed(1)} (5 min) on ${cpus().length} CPUs: wall-clock numbers include waiting for a CPU; the CPU-time rows do not.`,
    "",
  ];
  writeFileSync(
    join(ROOT, "bench", "seg.results.md"),
    [...header, ...rows].join("\n").replace(/\n+$/, "\n"),
  );
  process.stdout.write(`\nwrote bench/seg.results.md\n`);
}

await main();
