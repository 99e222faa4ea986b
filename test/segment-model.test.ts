import { BlockList } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isZtError } from "../src/core/errors.js";
import {
  compileNftables,
  FlowEvaluator,
  formatIp,
  formatRange,
  parseCidr,
  parseIp,
  parsePortSpec,
  parseSegModel,
} from "../src/segment/index.js";

function errorsOf(text: string): string[] {
  try {
    parseSegModel(text, "segments.yaml");
  } catch (e) {
    if (isZtError(e) && e.code === "ZT_SEG_MODEL_INVALID")
      return (e.context["errors"] as string[]) ?? [];
    throw e;
  }
  return [];
}

const BASE = `segments:
  frontend:   { hosts: [10.0.1.10, 10.0.1.11] }
  api:        { hosts: [10.0.2.10/32, "fd00:2::/64"] }
  data:       { hosts: [10.0.3.10] }
flows:
  - { from: frontend, to: api,  ports: [tcp/8443] }
  - { from: api,      to: data, ports: [tcp/5432, tcp/8000-8100, udp/53, icmp], rate: 10/second }
mode: { default: audit, enforce: [data] }
`;

describe("segments.yaml validation", () => {
  it("accepts the issue's example shape", () => {
    const { model, findings } = parseSegModel(BASE);
    expect(model.segments.map((s) => s.name)).toEqual(["frontend", "api", "data"]);
    expect(model.flows[1]!.ports).toEqual([
      { proto: "tcp", lo: 5432, hi: 5432 },
      { proto: "tcp", lo: 8000, hi: 8100 },
      { proto: "udp", lo: 53, hi: 53 },
      { proto: "icmp" },
    ]);
    expect(model.flows[1]!.rate).toEqual({ count: 10, unit: "second" });
    expect(model.mode.default).toBe("audit");
    expect(model.mode.perSegment.get("data")).toBe("enforce");
    expect(findings).toEqual([]);
  });

  it("names the line and key of a flow to an unknown segment", () => {
    const text = BASE.replace("to: data, ports", "to: dta, ports");
    expect(errorsOf(text)).toEqual([
      'segments.yaml:7: flows[1].to: unknown segment "dta" (did you mean "data"?)',
    ]);
  });

  it("names the line of bad addresses, ports, rates and unknown keys", () => {
    const text = `segments:
  a: { hosts: [10.0.0.300] }
  b: { hosts: [10.0.1.5/24], colour: red }
flows:
  - { from: a, to: b, ports: [tcp/99999] }
  - { from: a, to: b, ports: [tcp/80], rate: lots }
  - { from: a, to: b, ports: [] }
`;
    const errs = errorsOf(text);
    expect(errs).toContain('segments.yaml:3: segments.b.colour: Unrecognized key: "colour"');
    expect(errs.length).toBeGreaterThanOrEqual(2);
    const text2 = text.replace(", colour: red", "").replace("ports: [] }", "ports: [udp/1] }");
    const errs2 = errorsOf(text2);
    expect(errs2).toEqual([
      'segments.yaml:2: segments.a.hosts[0]: not an IPv4 or IPv6 address or CIDR: "10.0.0.300"',
      'segments.yaml:3: segments.b.hosts[0]: host bits set in "10.0.1.5/24" (did you mean 10.0.1.0/24?)',
      'segments.yaml:5: flows[0].ports[0]: port out of range 0-65535 in "tcp/99999"',
      'segments.yaml:6: flows[1].rate: expected N/second|minute|hour|day, got "lots"',
    ]);
  });

  it("reports overlapping segments, including IPv6", () => {
    const text = `segments:
  a: { hosts: [10.0.0.0/24, "fd00::/64"] }
  b: { hosts: [10.0.1.0/24, 10.0.0.128/25] }
  c: { hosts: ["fd00::5"] }
`;
    expect(errorsOf(text)).toEqual([
      'segments.yaml:3: segments.b.hosts[1]: 10.0.0.128/25 overlaps 10.0.0.0/24 of segment "a": an address must belong to one segment',
      'segments.yaml:4: segments.c.hosts[0]: fd00::5 overlaps fd00::/64 of segment "a": an address must belong to one segment',
    ]);
  });

  it("reports unknown segments in egress and mode, and a segment in both modes", () => {
    const text = `${BASE.replace("mode: { default: audit, enforce: [data] }", "mode: { default: audit, enforce: [data, dat], audit: [data] }")}egress:\n  nope: [udp/53]\n`;
    const errs = errorsOf(text);
    expect(errs).toContain(
      'segments.yaml:8: mode.enforce[1]: unknown segment "dat" (did you mean "data"?)',
    );
    expect(errs).toContain(
      'segments.yaml:8: mode.audit[0]: segment "data" is listed under both mode.enforce and mode.audit',
    );
    expect(errs).toContain('segments.yaml:10: egress.nope: unknown segment "nope"');
  });

  it("reports YAML syntax errors with a line", () => {
    const errs = errorsOf("segments:\n  a: { hosts: [10.0.0.1]\nflows: []\n");
    expect(errs[0]).toMatch(/^segments\.yaml:\d+: \(yaml\): /);
  });

  it("refuses a YAML alias bomb as an invalid model, naming its line (not ZT_INTERNAL)", () => {
    // 9 × 9 × 101 alias expansions: the yaml library stops at maxAliasCount by throwing
    const b = `[${Array(9).fill("*a").join(",")}]`;
    const c = `[${Array(9).fill("*b").join(",")}]`;
    const d = `[${Array(101).fill("*c").join(",")}]`;
    const text = `segments: {}\nx: &a [1, 2]\ny: &b ${b}\nz: &c ${c}\nbomb: ${d}\n`;
    const errs = errorsOf(text);
    expect(errs).toHaveLength(1);
    expect(errs[0]).toMatch(/^segments\.yaml:\d+: \(yaml\): .*alias/i);
  });

  it("warns about duplicate and unreachable flows and empty segments", () => {
    const text = `segments:
  a: { hosts: [10.0.0.1] }
  b: { hosts: [10.0.0.2] }
  e: {}
flows:
  - { from: a, to: "*", ports: [tcp/1-1024] }
  - { from: a, to: b, ports: [tcp/22] }
  - { from: a, to: b, ports: [tcp/5000] }
  - { from: a, to: b, ports: [tcp/5000] }
  - { from: a, to: b, ports: [tcp/443], rate: 1/second }
  - { from: e, to: a, ports: [udp/53] }
`;
    const { findings } = parseSegModel(text);
    const lines = findings.map((f) => `${f.line} ${f.code} ${f.path}: ${f.message}`);
    expect(lines).toEqual([
      "4 empty-segment segments.e: segment has no hosts: no nftables rule can match it",
      '11 unreachable-flow flows[5].from: unreachable: segment "e" has no hosts',
      '7 unreachable-flow flows[1]: unreachable: tcp/22 from "a" to "b" is already allowed by flows[0]',
      "9 duplicate-flow flows[3]: duplicate of flows[2]",
      '10 unreachable-flow flows[4]: its rate limit never applies: tcp/443 from "a" to "b" is already allowed by flows[0]',
    ]);
  });
});

describe("addresses and ports", () => {
  it("parses and formats IPv6 per RFC 5952 (RFC 5952 §4 examples)", () => {
    expect(formatIp(6, parseIp("2001:db8:0:0:0:0:2:1")!.value)).toBe("2001:db8::2:1");
    expect(formatIp(6, parseIp("2001:db8:0:1:1:1:1:1")!.value)).toBe("2001:db8:0:1:1:1:1:1");
    expect(formatIp(6, parseIp("2001:0:0:1:0:0:0:1")!.value)).toBe("2001:0:0:1::1");
    expect(formatIp(6, parseIp("::ffff:10.0.0.1")!.value)).toBe("::ffff:a00:1");
    expect(formatIp(6, parseIp("::")!.value)).toBe("::");
  });

  it("IPv4/IPv6 parse→format round-trips and agrees with node's BlockList (property)", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.nat(128), (addr, bits) => {
        const ip = parseIp(addr);
        expect(ip).toBeDefined();
        // IPv4-mapped addresses are read as IPv4 (see below)
        fc.pre(!(ip!.family === 6 && ip!.value >> 32n === 0xffffn));
        const text = formatIp(ip!.family, ip!.value);
        expect(parseIp(text)!.value).toBe(ip!.value);
        const prefix = bits % (ip!.family === 4 ? 33 : 129);
        const size = BigInt(ip!.family === 4 ? 32 : 128) - BigInt(prefix);
        const net = (ip!.value >> size) << size;
        const cidr = `${formatIp(ip!.family, net)}/${prefix}`;
        const r = parseCidr(cidr);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const bl = new BlockList();
        bl.addSubnet(formatIp(ip!.family, net), prefix, ip!.family === 4 ? "ipv4" : "ipv6");
        expect(bl.check(text, ip!.family === 4 ? "ipv4" : "ipv6")).toBe(true);
        expect(r.range.start <= ip!.value && ip!.value <= r.range.end).toBe(true);
        expect(formatRange(r.range)).toBe(
          prefix === (ip!.family === 4 ? 32 : 128) ? formatIp(ip!.family, net) : cidr,
        );
      }),
      { numRuns: 500 },
    );
  });

  it("parses port specs", () => {
    expect(parsePortSpec("tcp/8000-8100")).toEqual({
      ok: true,
      spec: { proto: "tcp", lo: 8000, hi: 8100 },
    });
    expect(parsePortSpec("UDP/53")).toEqual({ ok: true, spec: { proto: "udp", lo: 53, hi: 53 } });
    expect(parsePortSpec("tcp")).toEqual({ ok: true, spec: { proto: "tcp", lo: 0, hi: 65535 } });
    expect(parsePortSpec("icmp")).toEqual({ ok: true, spec: { proto: "icmp" } });
    expect(parsePortSpec("tcp/9-1").ok).toBe(false);
    expect(parsePortSpec("sctp/1").ok).toBe(false);
  });
});

describe("reference evaluator", () => {
  const { model } = parseSegModel(BASE);
  const ev = new FlowEvaluator(model);
  it("allows the model's flows, directionally", () => {
    expect(
      ev.evaluate({ src: "10.0.1.10", dst: "10.0.2.10", proto: "tcp", port: 8443 }),
    ).toMatchObject({ verdict: "allow", flow: 0 });
    expect(
      ev.evaluate({ src: "10.0.2.10", dst: "10.0.1.10", proto: "tcp", port: 8443 }),
    ).toMatchObject({ verdict: "would-drop" });
    expect(
      ev.evaluate({ src: "10.0.2.10", dst: "10.0.3.10", proto: "tcp", port: 8050 }),
    ).toMatchObject({ verdict: "allow", rateLimited: true });
    expect(ev.evaluate({ src: "10.0.2.10", dst: "10.0.3.10", proto: "icmp" })).toMatchObject({
      verdict: "allow",
    });
  });
  it("uses the destination segment's mode", () => {
    expect(
      ev.evaluate({ src: "10.0.1.10", dst: "10.0.3.10", proto: "tcp", port: 5432 }),
    ).toMatchObject({ verdict: "drop", to: "data" });
    expect(
      ev.evaluate({ src: "10.0.3.10", dst: "10.0.1.10", proto: "tcp", port: 5432 }),
    ).toMatchObject({ verdict: "would-drop" });
    expect(
      ev.evaluate({ src: "fd00:2::1", dst: "10.9.9.9", proto: "udp", port: 53 }),
    ).toMatchObject({ verdict: "would-drop", from: "api" });
  });
});

describe("IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)", () => {
  it("are read as the IPv4 address or network they stand for", () => {
    const cases: [string, string][] = [
      ["::ffff:10.0.2.5", "10.0.2.5"],
      ["::FFFF:10.0.2.5", "10.0.2.5"],
      ["::ffff:a00:205", "10.0.2.5"],
      ["0:0:0:0:0:ffff:a00:205", "10.0.2.5"],
      ["::ffff:10.0.2.5/128", "10.0.2.5"],
      ["::ffff:10.0.2.0/120", "10.0.2.0/24"],
      ["::ffff:0:0/96", "0.0.0.0/0"],
    ];
    for (const [mapped, v4] of cases) {
      const r = parseCidr(mapped);
      expect(r, mapped).toEqual(parseCidr(v4));
      expect(r.ok && r.range.family, mapped).toBe(4);
    }
    // not mapped: stays IPv6
    expect(parseCidr("64:ff9b::10.0.2.5")).toMatchObject({ ok: true, range: { family: 6 } });
    expect(parseCidr("::/0")).toMatchObject({ ok: true, range: { family: 6 } });
  });

  it("refuses a mapped prefix shorter than /96, naming the entry", () => {
    expect(
      errorsOf(`segments:
  db: { hosts: [10.0.9.1, "::ffff:10.0.0.0/95"] }
  web: { hosts: [{ name: w1, ip: "::ffff:0:0/80" }] }
`),
    ).toEqual([
      'segments.yaml:2: segments.db.hosts[1]: IPv4-mapped IPv6 prefix shorter than /96 in "::ffff:10.0.0.0/95": it is not an IPv4 network; write the IPv4 addresses it should cover as IPv4 (a.b.c.d/N)',
      'segments.yaml:3: segments.web.hosts[0]: IPv4-mapped IPv6 prefix shorter than /96 in "::ffff:0:0/80": it is not an IPv4 network; write the IPv4 addresses it should cover as IPv4 (a.b.c.d/N)',
    ]);
    expect(errorsOf(`segments:\n  db: { hosts: ["::ffff:10.0.2.1/120"] }\n`)).toEqual([
      'segments.yaml:2: segments.db.hosts[0]: host bits set in "::ffff:10.0.2.1/120" (did you mean 10.0.2.0/24?)',
    ]);
  });

  it("compile into the IPv4 sets, exactly as the IPv4 form does (the review's db/web case)", () => {
    const model = (db: string) => `segments:
  db: { hosts: [${db}] }
  web: { hosts: [10.0.1.10] }
flows:
  - { from: web, to: db, ports: [tcp/5432] }
egress:
  web: [tcp]
`;
    const mapped = compileNftables(parseSegModel(model('"::ffff:10.0.2.5"')).model).text;
    const plain = compileNftables(parseSegModel(model("10.0.2.5")).model).text;
    expect(mapped).toBe(plain);
    expect(mapped).toContain("set seg_db_v4 {");
    expect(mapped).not.toContain("seg_db_v6");
    expect(mapped).toMatch(/set zt_all_v4 \{[^}]*10\.0\.2\.5/);
    for (const target of [
      { kind: "segment" as const, segment: "db" },
      { kind: "host" as const, host: "::ffff:10.0.2.5" },
      { kind: "host" as const, host: "10.0.2.5" },
    ]) {
      expect(
        compileNftables(parseSegModel(model('"::ffff:10.0.2.5"')).model, { target }).text,
      ).toContain("10.0.1.10 . 10.0.2.5 . tcp . 5432");
    }
  });

  it("overlap with the IPv4 form, and evaluate mapped packet addresses as IPv4", () => {
    expect(
      errorsOf(`segments:\n  a: { hosts: [10.0.2.0/24] }\n  b: { hosts: ["::ffff:10.0.2.5"] }\n`),
    ).toEqual([
      'segments.yaml:3: segments.b.hosts[0]: 10.0.2.5 overlaps 10.0.2.0/24 of segment "a": an address must belong to one segment',
    ]);
    const ev = new FlowEvaluator(parseSegModel(BASE).model);
    expect(
      ev.evaluate({ src: "::ffff:10.0.1.10", dst: "::ffff:10.0.2.10", proto: "tcp", port: 8443 }),
    ).toMatchObject({ verdict: "allow", from: "frontend", to: "api" });
    expect(ev.segmentOf("::ffff:10.0.3.10")).toBe("data");
  });
});
