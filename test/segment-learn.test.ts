import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  LogLineParser,
  SegmentIndex,
  learnFromFiles,
  parseSegModel,
  proposedModelYaml,
  readObservedFiles,
  simulateFlows,
} from "../src/segment/index.js";

const MODEL = `segments:
  frontend: { hosts: [10.0.1.10, 10.0.1.11, "fd00:1::10"] }
  api: { hosts: [10.0.2.10, "fd00:2::10"] }
  data: { hosts: [10.0.3.0/28] }
flows:
  - { from: frontend, to: api, ports: [tcp/8443] }
mode: { default: audit, enforce: [data] }
`;

// Shapes of real kernel log lines (nftables `log prefix`, ufw, IPv6, ICMP) as journald/rsyslog write them.
const LINES = {
  v4tcp:
    "2026-11-20T10:00:01.123456+00:00 gw kernel: ZT-WOULD-DROP IN=eth1 OUT=eth2 MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=10.0.1.10 DST=10.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=54321 DF PROTO=TCP SPT=40001 DPT=8443 WINDOW=64240 RES=0x00 SYN URGP=0",
  ufw: "Nov 20 10:00:03 web1 kernel: [12345.678901] [UFW BLOCK] IN=eth0 OUT= MAC=aa:bb:cc:dd:ee:ff:11:22:33:44:55:66:08:00 SRC=10.0.2.10 DST=10.0.3.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=50000 DPT=5432 WINDOW=64240 RES=0x00 SYN URGP=0",
  v6tcp:
    "Nov 20 10:00:04 gw kernel: ZT-DROP IN=eth1 OUT=eth2 MAC=aa SRC=fd00:1::10 DST=fd00:2::10 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=123 PROTO=TCP SPT=43210 DPT=22 WINDOW=64800 RES=0x00 SYN URGP=0",
  udp: "Nov 20 10:00:05 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=10.0.2.10 DST=9.9.9.9 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=7 PROTO=UDP SPT=5353 DPT=53 LEN=40",
  icmp: "Nov 20 10:00:06 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=10.0.1.11 DST=10.0.3.2 LEN=84 TOS=0x00 PREC=0x00 TTL=63 ID=9 DF PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1",
  icmp6:
    "Nov 20 10:00:07 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=fd00:1::10 DST=fd00:2::10 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=5 SEQ=1",
  json: '{"src":"10.0.1.10","dst":"10.0.2.10","proto":"tcp","dport":8443,"ts":"2026-11-20T11:00:00Z"}',
};

describe("log line parser", () => {
  const p = new LogLineParser({ year: 2026 });
  it("reads nftables, ufw, IPv6, UDP, ICMP, ICMPv6 and JSON flow records", () => {
    expect(p.parse(LINES.v4tcp)).toEqual({
      src: "10.0.1.10",
      dst: "10.0.2.10",
      proto: "tcp",
      port: 8443,
      ts: Date.parse("2026-11-20T10:00:01.123Z"),
      verdict: "ZT-WOULD-DROP",
    });
    expect(p.parse(LINES.ufw)).toEqual({
      src: "10.0.2.10",
      dst: "10.0.3.1",
      proto: "tcp",
      port: 5432,
      ts: Date.UTC(2026, 10, 20, 10, 0, 3),
    });
    expect(p.parse(LINES.v6tcp)).toMatchObject({
      src: "fd00:1::10",
      dst: "fd00:2::10",
      proto: "tcp",
      port: 22,
      verdict: "ZT-DROP",
    });
    expect(p.parse(LINES.udp)).toMatchObject({ proto: "udp", port: 53 });
    expect(p.parse(LINES.icmp)).toMatchObject({ proto: "icmp", dst: "10.0.3.2" });
    expect(p.parse(LINES.icmp)).not.toHaveProperty("port");
    expect(p.parse(LINES.icmp6)).toMatchObject({ proto: "icmp", src: "fd00:1::10" });
    expect(p.parse(LINES.json)).toEqual({
      src: "10.0.1.10",
      dst: "10.0.2.10",
      proto: "tcp",
      port: 8443,
      ts: Date.parse("2026-11-20T11:00:00Z"),
    });
  });
  it("ignores lines that are not flow records", () => {
    for (const l of [
      "",
      "garbage",
      "Nov 20 10:00:00 host sshd[1]: Accepted publickey",
      "{not json",
      '{"src":"a"}',
      LINES.v4tcp.replace(" DPT=8443", ""),
    ]) {
      expect(p.parse(l)).toBeUndefined();
    }
  });
});

/** A plain regex reading of the same fields: the reference for the hand-written hot path. */
function referenceParse(line: string, year: number) {
  const m = / SRC=(\S+) DST=(\S+) .*?PROTO=(\S+)(?:.*? DPT=(\d+))?/.exec(line);
  if (!m) return undefined;
  const proto = (
    { TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPv6: "icmp" } as Record<string, string>
  )[m[3]!];
  if (!proto || (proto !== "icmp" && m[4] === undefined)) return undefined;
  const out: Record<string, unknown> = { src: m[1], dst: m[2], proto };
  if (proto !== "icmp") out["port"] = Number(m[4]);
  const iso = /^(\d{4}-\d\d-\d\dT\S+) /.exec(line);
  const bsd = /^([A-Z][a-z]{2}) +(\d+) (\d\d:\d\d:\d\d) /.exec(line);
  if (iso) out["ts"] = Math.floor(Date.parse(iso[1]!));
  else if (bsd) out["ts"] = Date.parse(`${bsd[1]} ${bsd[2]} ${year} ${bsd[3]} UTC`);
  const v = /(ZT-WOULD-DROP|ZT-DROP)/.exec(line);
  if (v) out["verdict"] = v[1];
  return out;
}

describe("log line parser equivalence", () => {
  it("the fast parser agrees with a regex reference on generated kernel log lines (property)", () => {
    const p = new LogLineParser({ year: 2026 });
    const stampArb = fc.oneof(
      fc
        .tuple(
          fc.integer({ min: 0, max: 11 }),
          fc.integer({ min: 1, max: 28 }),
          fc.nat(86399),
          fc.nat(999),
          fc.constantFrom("+00:00", "Z", "+02:00"),
        )
        .map(([mo, d, s, ms, z]) => {
          const t = new Date(Date.UTC(2026, mo, d, 0, 0, s, ms)).toISOString().slice(0, 19);
          return `${t}.${String(ms).padStart(3, "0")}${z}`;
        }),
      fc
        .tuple(
          fc.constantFrom("Jan", "Feb", "Nov", "Dec"),
          fc.integer({ min: 1, max: 28 }),
          fc.nat(86399),
        )
        .map(
          ([mo, d, s]) =>
            `${mo} ${String(d).padStart(2, " ")} ${new Date(s * 1000).toISOString().slice(11, 19)}`,
        ),
    );
    fc.assert(
      fc.property(
        stampArb,
        fc.oneof(fc.ipV4(), fc.ipV6()),
        fc.oneof(fc.ipV4(), fc.ipV6()),
        fc.constantFrom("TCP", "UDP", "ICMP", "ICMPv6"),
        fc.nat(65535),
        fc.nat(65535),
        fc.constantFrom("ZT-DROP ", "ZT-WOULD-DROP ", "[UFW BLOCK] ", ""),
        (stamp, src, dst, proto, spt, dpt, prefix) => {
          const ports = proto.startsWith("ICMP")
            ? `TYPE=8 CODE=0 ID=${spt} SEQ=1`
            : `SPT=${spt} DPT=${dpt} WINDOW=1 RES=0x00 SYN URGP=0`;
          const line = `${stamp} host kernel: ${prefix}IN=eth0 OUT= MAC=aa:bb SRC=${src} DST=${dst} LEN=60 TOS=0x00 TTL=64 ID=1 DF PROTO=${proto} ${ports}`;
          expect(p.parse(line)).toEqual(referenceParse(line, 2026));
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("learn and simulate", { timeout: 180_000 }, () => {
  let dir: string;
  let logPath: string;
  const { model } = parseSegModel(MODEL);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "zt-learn-"));
    logPath = join(dir, "kern.log");
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const sec = String(i % 60).padStart(2, "0");
      lines.push(
        LINES.v4tcp
          .replace("SPT=40001", `SPT=${30000 + (i % 20000)}`)
          .replace(
            "10:00:01.123456",
            `10:${String(Math.floor(i / 60) % 60).padStart(2, "0")}:${sec}.000000`,
          ),
      );
      if (i % 10 === 0)
        lines.push(LINES.ufw, LINES.udp, LINES.icmp, LINES.v6tcp, LINES.icmp6, "noise line");
    }
    await writeFile(logPath, lines.join("\n")); // no trailing newline: the last line counts too
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("aggregates by segment and service, ignoring ephemeral source ports", async () => {
    const { result, stats } = await learnFromFiles([logPath], {
      year: 2026,
      index: new SegmentIndex(model),
    });
    expect(stats.lines).toBe(20_000 + 2000 * 6);
    expect(stats.parsed).toBe(20_000 + 2000 * 5);
    const fa = result.flows.find((f) => f.from === "frontend" && f.to === "api")!;
    expect(fa.ports).toEqual(["icmp", "tcp/22", "tcp/8443"]);
    expect(fa.count).toBe(20_000 + 4000);
    expect(fa.first_seen).toBe("2026-11-20T10:00:00.000Z");
    expect(result.flows.find((f) => f.from === "api" && f.to === "data")).toMatchObject({
      ports: ["tcp/5432"],
      count: 2000,
    });
    expect(result.egress).toEqual({ api: ["udp/53"] });
    expect(result.inventory.find((e) => e.address === "10.0.2.10")).toMatchObject({
      segment: "api",
      services: ["tcp/8443"],
    });
    expect(result.observed.find((o) => o.dst === "10.0.2.10" && o.port === 8443)?.count).toBe(
      20_000,
    );
  });

  it("proposes a model that allows everything observed; the original drops what it lacks", async () => {
    const { result } = await learnFromFiles([logPath], {
      year: 2026,
      index: new SegmentIndex(model),
    });
    const proposed = parseSegModel(proposedModelYaml(model, result)).model;
    const ok = simulateFlows(proposed, result.observed);
    expect(ok.dropped).toBe(0);
    expect(ok.allowed + ok.egress).toBe(ok.packets);
    const before = simulateFlows(model, result.observed);
    expect(before.groups.map((g) => [g.from, g.to, g.mode, g.count])).toEqual([
      ["frontend", "api", "audit", 4000],
      ["api", "(outside)", "audit", 2000],
      ["api", "data", "enforce", 2000],
      ["frontend", "data", "enforce", 2000],
    ]);
    expect(before.groups[0]!.ports).toEqual([
      { port: "tcp/22", count: 2000 },
      { port: "icmp", count: 2000 },
    ]);
  });

  it("without a model, proposes one segment per address", async () => {
    const { result } = await learnFromFiles([logPath], { year: 2026 });
    expect(result.segments["h-10-0-2-10"]).toEqual({ hosts: ["10.0.2.10"] });
    expect(result.segments["h-fd00-1--10"]).toEqual({ hosts: ["fd00:1::10"] });
    expect(() => parseSegModel(proposedModelYaml(undefined, result))).not.toThrow();
  });

  it("IPv4-mapped addresses (zt's own JSON records of a dual-stack listener) count as IPv4", async () => {
    const path = join(dir, "zt-flows.log");
    await writeFile(
      path,
      [
        '{"client_ip":"::ffff:10.0.1.10","dst_ip":"10.0.2.10","dst_port":8443}',
        '{"client_ip":"::FFFF:10.0.1.10","dst_ip":"::ffff:10.0.2.10","dst_port":8443}',
        '{"src":"10.0.1.10","dst":"10.0.2.10","dport":8443}',
        '{"client_ip":"::ffff:10.0.1.11","dst_ip":"::ffff:10.0.2.10","dst_port":8443}',
      ].join("\n"),
    );
    const { result } = await learnFromFiles([path], { year: 2026, index: new SegmentIndex(model) });
    expect(result.flows).toEqual([{ from: "frontend", to: "api", ports: ["tcp/8443"], count: 4 }]);
    expect(result.segments).toEqual({});
    expect(result.inventory.map((e) => [e.address, e.segment])).toEqual([
      ["10.0.1.10", "frontend"],
      ["10.0.1.11", "frontend"],
      ["10.0.2.10", "api"],
    ]);
    // without a model: one proposed IPv4 segment per host, not h--ffff-…
    const bare = await learnFromFiles([path], { year: 2026 });
    expect(Object.keys(bare.result.segments).sort()).toEqual([
      "h-10-0-1-10",
      "h-10-0-1-11",
      "h-10-0-2-10",
    ]);
    expect(bare.result.segments["h-10-0-1-10"]).toEqual({ hosts: ["10.0.1.10"] });
    // observed flows read back from a learn output, and simulated
    const observed = join(dir, "observed-mapped.yaml");
    await writeFile(
      observed,
      'observed:\n  - { src: "::ffff:10.0.1.10", dst: "::ffff:10.0.2.10", proto: tcp, port: 8443, count: 2 }\n',
    );
    const flows = await readObservedFiles([observed]);
    expect(flows).toEqual([
      { src: "10.0.1.10", dst: "10.0.2.10", proto: "tcp", port: 8443, count: 2 },
    ]);
    expect(simulateFlows(model, flows)).toMatchObject({ allowed: 2, dropped: 0 });
  });

  it("one address in every written form is one host; lines whose SRC/DST is not an address are not flows", async () => {
    const path = join(dir, "forms.log");
    const k = (src: string, dst: string, dpt: number) =>
      `2026-11-20T10:00:00+00:00 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=${src} DST=${dst} LEN=80 PROTO=TCP SPT=40000 DPT=${dpt} SYN`;
    await writeFile(
      path,
      [
        // the kernel writes IPv6 in full; zt's JSON records in RFC 5952 form
        k("fd00:0250:0000:0000:0000:0000:0001:0010", "fd00:0250:0000:0000:0000:0000:0002:0010", 22),
        '{"src":"fd00:250::1:10","dst":"FD00:250::2:10","proto":"tcp","dport":22}',
        k("fd00:1111:2222:3333:4444:5555:6666:7777", "fd00:1:2:3:4:5:6:8", 22), // 39 characters
        k("1.2.3.4", "10.0.0.1", 80),
        '{"src":"1:2:3:4::","dst":"10.0.0.1","proto":"tcp","dport":80}', // not 1.2.3.4
        k("garbage;}x", "10.0.0.1", 80),
        k("10.0.0.9", "10.0.0.1\u0000", 80),
        '{"src":"10.0.0.9","dst":"not-an-ip","proto":"tcp","dport":80}',
      ].join("\n"),
    );
    const { result, stats } = await learnFromFiles([path], { year: 2026 });
    expect(stats.parsed).toBe(5);
    expect(result.inventory.map((e) => e.address)).toEqual([
      "1.2.3.4",
      "10.0.0.1",
      "1:2:3:4::",
      "fd00:1111:2222:3333:4444:5555:6666:7777",
      "fd00:1:2:3:4:5:6:8",
      "fd00:250::1:10",
      "fd00:250::2:10",
    ]);
    expect(result.observed.find((f) => f.src === "fd00:250::1:10")?.count).toBe(2);
    expect(result.segments["h-fd001111222233334444555566667777"]).toEqual({
      hosts: ["fd00:1111:2222:3333:4444:5555:6666:7777"],
    });
    expect(result.segments["h-1-2-3-4--"]).toEqual({ hosts: ["1:2:3:4::"] });
    // every proposed segment holds exactly its own address, and the proposal is a valid model
    const hosts = Object.values(result.segments).map((s) => s.hosts);
    expect(hosts).toHaveLength(7);
    expect(new Set(hosts.flat()).size).toBe(7);
    const proposal = parseSegModel(proposedModelYaml(undefined, result)).model;
    const sim = simulateFlows(proposal, result.observed);
    expect(sim).toMatchObject({ packets: 5, allowed: 5, dropped: 0 });
    // observed flows read back: canonical, and an entry that is not an address is named
    const obs = join(dir, "observed-forms.yaml");
    await writeFile(
      obs,
      'observed:\n  - { src: "FD00:0250::1:10", dst: 10.0.0.1, proto: tcp, port: 80 }\n',
    );
    expect((await readObservedFiles([obs]))[0]?.src).toBe("fd00:250::1:10");
    await writeFile(obs, 'observed:\n  - { src: 10.0.0.9, dst: "x;}", proto: tcp, port: 80 }\n');
    const err = await readObservedFiles([obs]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ZT_BAD_REQUEST" });
    expect((err as Error).message).toMatch(/observed\.0\.dst: not an IP address: "x;}"/);
  });

  it("a learned address is never proposed under the name of a segment the model already has", async () => {
    // The model's own segment happens to be called what an outside address would be.
    const { model } = parseSegModel(`segments:
  h-10-0-0-1: { hosts: [10.7.0.0/24] }
  h-0a000001: { k8s: { namespace: web } }
  web: { hosts: [10.0.2.10] }
flows:
  - { from: h-10-0-0-1, to: web, ports: [tcp/443] }
`);
    const path = join(dir, "taken.log");
    const k = (src: string) =>
      `Nov 20 10:00:00 gw kernel: ZT-DROP IN=eth0 OUT= SRC=${src} DST=10.9.9.9 LEN=60 PROTO=TCP SPT=1 DPT=22 SYN`;
    await writeFile(path, [k("10.0.0.1"), k("10.0.0.2"), k("10.7.0.5")].join("\n"));
    const { result } = await learnFromFiles([path], { year: 2026, index: new SegmentIndex(model) });
    // 10.0.0.1's usual name and its digits are both the model's; 10.0.0.2's usual name is
    // free, and 10.7.0.5 is inside the model's h-10-0-0-1.
    expect(Object.keys(result.segments).sort()).toEqual([
      "h-0a000001_2",
      "h-10-0-0-2",
      "h-10-9-9-9",
    ]);
    expect(result.segments["h-0a000001_2"]).toEqual({ hosts: ["10.0.0.1"] });
    const proposal = parseSegModel(proposedModelYaml(model, result)).model;
    const seg = (n: string) => proposal.segments.find((x) => x.name === n);
    expect(seg("h-10-0-0-1")?.hosts.map((h) => h.text)).toEqual(["10.7.0.0/24"]);
    expect(seg("h-0a000001_2")?.hosts.map((h) => h.text)).toEqual(["10.0.0.1"]);
    expect(seg("h-0a000001")?.k8s).toEqual({ namespace: "web", podSelector: {} });
  });

  it("the proposed model keeps the model's log rate (log.rate / log.burst)", async () => {
    const { model } = parseSegModel(`segments:
  web: { hosts: [10.0.2.10] }
log: { rate: 3/second, burst: 9 }
`);
    const path = join(dir, "lograte.log");
    await writeFile(
      path,
      "Nov 20 10:00:00 gw kernel: ZT-DROP IN=eth0 OUT= SRC=10.0.2.10 DST=10.9.9.9 LEN=60 PROTO=TCP SPT=1 DPT=22 SYN",
    );
    const { result } = await learnFromFiles([path], { year: 2026, index: new SegmentIndex(model) });
    expect(parseSegModel(proposedModelYaml(model, result)).model.log).toEqual({
      rate: { count: 3, unit: "second" },
      burst: 9,
    });
  });

  it("a flood of distinct flows (a scan from spoofed sources) stops growing the aggregate at its cap", async () => {
    const path = join(dir, "scan.log");
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++)
      lines.push(
        `Nov 20 10:00:00 gw kernel: ZT-DROP IN=eth0 OUT= SRC=198.51.${i >> 8}.${i & 255} DST=10.0.2.10 LEN=60 PROTO=TCP SPT=1 DPT=${1 + (i % 7)} SYN`,
      );
    lines.push(lines[0]!); // a flow already held is still counted
    await writeFile(path, lines.join("\n"));
    const { result, stats } = await learnFromFiles([path], { year: 2026, maxFlows: 1000 });
    expect(result.observed).toHaveLength(1000);
    expect(stats.parsed).toBe(3001);
    expect(stats.unaggregated).toBe(2000);
    expect(result.observed.find((f) => f.src === "198.51.0.0")?.count).toBe(2);
    // simulate must not pass a check on part of the traffic: it refuses, naming the cap
    const err = await readObservedFiles([path], { maxFlows: 1000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ZT_BAD_REQUEST" });
    expect((err as Error).message).toMatch(/more than 1,000 distinct flows/);
  });

  function zt(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        [join(import.meta.dirname, "..", "bin", "zt"), ...args],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  it("JSON records: a time outside the Date range is ignored (not a crash), a port must be an integer or digits", async () => {
    const path = join(dir, "hostile.jsonl");
    const rec = (o: Record<string, unknown>) =>
      JSON.stringify({ src: "10.0.1.10", dst: "10.0.2.10", proto: "tcp", ...o });
    await writeFile(
      path,
      [
        rec({ dport: 8443, ts: 1e20 }), // past new Date()'s range: toISOString threw, learn died
        rec({ dport: 8443, ts: -1e20 }),
        rec({ dport: "" }), // Number("") is 0: a bogus tcp/0
        rec({ dport: [5432] }), // Number([5432]) is 5432
        rec({ dport: "0x16" }), // Number("0x16") is 22
        rec({ dport: true }),
        rec({ dport: " 22 " }),
        rec({ dport: 22.5 }),
        rec({ dport: "9100", ts: 1_763_632_800_000 }), // a port in digits, a time in ms: both read
        "",
      ].join("\n"),
    );
    const { result, stats } = await learnFromFiles([path], { year: 2026 });
    expect(stats.parsed).toBe(3);
    expect(result.observed.map((f) => `${f.proto}/${f.port}`).sort()).toEqual([
      "tcp/8443",
      "tcp/9100",
    ]);
    expect(result.observed.find((f) => f.port === 8443)).not.toHaveProperty("first");
    expect(result.observed.find((f) => f.port === 9100)?.first).toBe(1_763_632_800_000);
    // and through the CLI, which writes the times as ISO text
    const cli = await zt(["seg", "learn", "--from", path]);
    expect(cli.stderr).not.toMatch(/ZT_INTERNAL/);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/tcp\/8443/);
    expect(cli.stdout).not.toMatch(/tcp\/(0|22|5432|1)\b/);
  });

  it("CLI: learn writes an inventory and a proposal; simulate --check fails on drops", async () => {
    const modelPath = join(dir, "segments.yaml");
    await writeFile(modelPath, MODEL);
    const out = join(dir, "learned.yaml");
    const proposal = join(dir, "proposed.yaml");
    const l = await zt([
      "seg",
      "learn",
      "--from",
      logPath,
      "--model",
      modelPath,
      "--out",
      out,
      "--model-out",
      proposal,
    ]);
    expect(l.stderr).toMatch(/learned 3 flows from 30,000 of 32,000 lines/);
    expect(l.code).toBe(0);
    const bad = await zt(["seg", "simulate", "--model", modelPath, "--flows", out, "--check"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/frontend\s+data\s+enforce \(dropped now\)\s+2000/);
    const good = await zt(["seg", "simulate", "--model", proposal, "--flows", logPath, "--check"]);
    expect(good.stdout + good.stderr).toMatch(/0 would be dropped/);
    expect(good.code).toBe(0);
    const missing = await zt(["seg", "learn", "--from", join(dir, "nope.log")]);
    expect(missing.code).toBe(66);
    expect(missing.stderr).toMatch(/ZT_NOT_FOUND: .*nope\.log: cannot read/);
  });

  it("CLI: a log with no flow line in it is refused naming it (learn printed an empty inventory and exited 0)", async () => {
    const noise = join(dir, "auth.log");
    await writeFile(noise, "Nov 20 10:00:00 host sshd[1]: Accepted publickey\ngarbage\n");
    const empty = join(dir, "empty.log");
    await writeFile(empty, "");
    for (const [file, what] of [
      [noise, /auth\.log: no flow line could be parsed in its 2 lines/],
      [empty, /empty\.log: no flow line could be parsed: the file is empty/],
    ] as const) {
      const r = await zt(["seg", "learn", "--from", file]);
      expect(r.stderr).toMatch(/^zt: error ZT_BAD_REQUEST: /);
      expect(r.stderr).toMatch(what);
      expect(r.stderr).toMatch(/nftables\/ufw `log prefix` lines or JSON flow records/);
      expect(r.code, r.stderr).toBe(64);
      expect(r.stdout).toBe("");
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    // two files, neither with a flow line: both named
    const both = await zt(["seg", "learn", "--from", noise, empty]);
    expect(both.code, both.stderr).toBe(64);
    expect(both.stderr).toMatch(
      /auth\.log, .*empty\.log: no flow line could be parsed in any of their 2 lines/,
    );
  });

  it("CLI: simulate --check over logs with no flow line is refused, not passed having seen nothing", async () => {
    const modelPath = join(dir, "segments-sim.yaml");
    await writeFile(modelPath, MODEL);
    const noise = join(dir, "noise-only.log");
    await writeFile(noise, "garbage\nmore garbage\n");
    const r = await zt(["seg", "simulate", "--model", modelPath, "--flows", noise, "--check"]);
    expect(r.stderr).toMatch(
      /^zt: error ZT_BAD_REQUEST: .*noise-only\.log: no flow line could be parsed/,
    );
    expect(r.code, r.stderr).toBe(64);
    expect(r.stdout).toBe("");
  });

  it("CLI: lines that are not flow records are skipped and counted; a file with none is named in a warning", async () => {
    const mixed = join(dir, "mixed.log");
    await writeFile(mixed, [LINES.v4tcp, "garbage", LINES.json, "{not json"].join("\n") + "\n");
    const r = await zt(["seg", "learn", "--from", mixed]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /learned 1 flows from 2 of 4 lines; 2 lines skipped \(not flow records\)/,
    );
    expect(r.stderr).not.toMatch(/warning/);
    const noise = join(dir, "other-noise.log");
    await writeFile(noise, "garbage\n");
    const two = await zt(["seg", "learn", "--from", mixed, noise]);
    expect(two.code, two.stderr).toBe(0);
    expect(two.stderr).toMatch(
      /^zt: warning: .*other-noise\.log: no flow line could be parsed in its 1 line; nothing learned from it$/m,
    );
    expect(two.stderr).not.toMatch(/warning: .*mixed\.log/);
  });

  it("CLI: a --from or --flows that is a directory is named as one (the error gave no path)", async () => {
    const sub = join(dir, "a-directory.log");
    await mkdir(sub, { recursive: true });
    const modelPath = join(dir, "segments-dir.yaml");
    await writeFile(modelPath, MODEL);
    for (const args of [
      ["seg", "learn", "--from", sub],
      ["seg", "simulate", "--model", modelPath, "--flows", sub],
    ]) {
      const r = await zt(args);
      expect(r.stderr).toMatch(
        /^zt: error ZT_USAGE: .*a-directory\.log: a directory, not a log file/,
      );
      expect(r.code, r.stderr).toBe(64);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
  });
});
