/**
 * Host rulesets (`--segment` / `--host`: input and output chains on the servers themselves)
 * against the reference evaluator, with real packets: random models (fast-check) are
 * compiled per host, loaded with the real `nft` into the host namespaces of a lab this test
 * creates (the router forwards everything), and every pair of hosts × ports is probed over
 * IPv4 and IPv6. A connection passes when the sender's output chain (present only for a
 * segment with an `egress` entry) and the receiver's input chain both let it; each must
 * decide as `FlowEvaluator` (what `zt seg simulate` and the router ruleset do) decides.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compileNftables, FlowEvaluator, parseSegModel } from "../src/segment/index.js";
import { NetnsLab, type ProbeTarget } from "../src/segment/netns-lab.js";
import { type Probe, randomModelYaml, randomPolicyArbs } from "./helpers/netns-probes.js";
import { netnsLabForSuite, netnsLabUsable } from "./helpers/netns-lab-suite.js";

const HOST_COUNT = 4;
const SEGS = ["s0", "s1", "s2"] as const;
const TCP_PORTS = [22, 443, 8443];
const UDP_PORTS = [53];

const label = (p: Probe) => `h${p.from}->h${p.to} ${p.proto}/${p.port} ${p.addr}`;

// Per lab host: outside the model (-1) or in s0..s2, listed with both of its addresses
// (a host ruleset filters all of the host's traffic, so its segment lists every address it
// has), each written as an address, a network or (IPv4) in ::ffff: form; and whether it
// loads the ruleset of its segment (--segment) or of itself by name (--host).
const hostArb = fc.record({
  seg: fc.integer({ min: -1, max: SEGS.length - 1 }),
  v4: fc.constantFrom("addr", "net", "mapped"),
  v6: fc.constantFrom("addr", "net"),
  target: fc.constantFrom("segment", "host"),
});
const modelArb = fc.record({
  hosts: fc.array(hostArb, { minLength: HOST_COUNT, maxLength: HOST_COUNT }),
  ...randomPolicyArbs(SEGS),
});
type RandomModel = typeof modelArb extends fc.Arbitrary<infer T> ? T : never;

function toYaml(m: RandomModel): string {
  return randomModelYaml(SEGS, m, (seg) =>
    m.hosts.flatMap((h, i) => {
      if (h.seg !== seg) return [];
      const n = i + 1;
      const v4 = {
        addr: NetnsLab.addr4(i),
        net: `10.250.${n}.0/24`,
        mapped: `"::ffff:${NetnsLab.addr4(i)}"`,
      }[h.v4];
      const v6 = { addr: `"${NetnsLab.addr6(i)}"`, net: `"fd00:250::${n}:0/112"` }[h.v6];
      // one name on both entries: `--host hN` is the dual-stack host
      return [`{ name: h${i}, ip: ${v4} }`, `{ name: h${i}, ip: ${v6} }`];
    }),
  );
}

const usable = await netnsLabUsable("host ruleset packet tests");

describe.skipIf(!usable)("host rulesets with real packets in network namespaces", () => {
  let lab: NetnsLab;
  const { allProbes, runProbes } = netnsLabForSuite({
    hostCount: HOST_COUNT,
    tcpPorts: TCP_PORTS,
    udpPorts: UDP_PORTS,
    label,
    timeoutsMs: [1000, 2500],
    ready: (created) => (lab = created),
  });

  async function loadHosts(text: string, targets: (string | undefined)[]): Promise<void> {
    const { model } = parseSegModel(text);
    await lab.reset();
    for (let i = 0; i < HOST_COUNT; i++) {
      const ns = lab.hosts[i]!;
      const t = targets[i];
      if (t === undefined) continue;
      const target = t.startsWith("seg:")
        ? { kind: "segment" as const, segment: t.slice(4) }
        : { kind: "host" as const, host: t };
      await lab.nft(ns, compileNftables(model, { target }).text);
    }
  }

  const v4 = NetnsLab.addr4;
  const v6 = NetnsLab.addr6;

  it("--host NAME of a dual-stack host (an IPv4 and an IPv6 entry of one name) lets the IPv6 flows in too", async () => {
    // --host took the first entry only: IPv6 to the host fell to the catch-all and was dropped
    await loadHosts(
      `segments:
  web: { hosts: [${v4(0)}, "${v6(0)}"] }
  db: { hosts: [{ name: db-1, ip: ${v4(1)} }, { name: db-1, ip: "${v6(1)}" }, { name: db-2, ip: ${v4(2)} }] }
  other: { hosts: [{ name: db-1x, ip: "${v6(2)}" }] }
flows:
  - { from: web, to: db, ports: [tcp/443] }
`,
      [undefined, "db-1"],
    );
    const res = await lab.probe(lab.hosts[0]!, [
      { addr: v4(1), proto: "tcp", port: 443 },
      { addr: v6(1), proto: "tcp", port: 443 },
      { addr: v4(1), proto: "tcp", port: 22 },
      { addr: v6(1), proto: "tcp", port: 22 },
    ]);
    expect(res).toEqual([true, true, false, false]);
    expect(await lab.counter(lab.hosts[1]!, "zt_drop")).toBeGreaterThanOrEqual(2);
  });

  it("--host NAME listed in two segments is refused, naming both", () => {
    const { model } = parseSegModel(`segments:
  a: { hosts: [{ name: x, ip: 10.0.0.1 }] }
  b: { hosts: [{ name: x, ip: "fd00::1" }] }
`);
    expect(() => compileNftables(model, { target: { kind: "host", host: "x" } })).toThrow(
      /--host: host "x" is listed in segments "a" and "b": a host belongs to one segment/,
    );
  });

  it("a host's output chain gives a packet the model does not allow its destination segment's mode (an enforcing host reaches an auditing one)", async () => {
    // the output chain took the sending host's own mode: data (enforced, with egress) could
    // reach none of the segments still in audit
    const text = `segments:
  data: { hosts: [${v4(0)}, "${v6(0)}"] }
  api: { hosts: [${v4(1)}, "${v6(1)}"] }
  admin: { hosts: [${v4(2)}, "${v6(2)}"] }
egress:
  data: [udp/53]
mode: { default: audit, enforce: [data, admin] }
`;
    await loadHosts(text, ["seg:data", "seg:api", "seg:admin"]);
    const res = await lab.probe(lab.hosts[0]!, [
      { addr: v4(1), proto: "tcp", port: 22 }, // to api (audit): would-drop, passes
      { addr: v6(1), proto: "tcp", port: 22 },
      { addr: v4(2), proto: "tcp", port: 22 }, // to admin (enforce): dropped
      { addr: v6(2), proto: "tcp", port: 22 },
      { addr: v4(3), proto: "tcp", port: 22 }, // outside the model: data's own mode, dropped
    ]);
    expect(res).toEqual([true, true, false, false, false]);
    expect(await lab.counter(lab.hosts[0]!, "zt_would_drop")).toBeGreaterThanOrEqual(2);
    expect(await lab.counter(lab.hosts[0]!, "zt_drop")).toBeGreaterThanOrEqual(3);
  });

  it("a connection data opened to an auditing segment is cut when that segment enforces (host recheck by destination mode)", async () => {
    const text = (enforced: string) => `segments:
  data: { hosts: [${v4(0)}, "${v6(0)}"] }
  api: { hosts: [${v4(1)}, "${v6(1)}"] }
egress:
  data: [udp/53]
mode: { default: audit, enforce: [${enforced}] }
`;
    await loadHosts(text("data"), ["seg:data"]);
    await lab.listenEcho([7100]);
    const conn = await lab.connect(lab.hosts[0]!, v4(1), 7100);
    try {
      expect(await conn.echo(3000)).toBe(true);
      const { model } = parseSegModel(text("data, api"));
      await lab.nft(
        lab.hosts[0]!,
        compileNftables(model, { target: { kind: "segment", segment: "data" } }).text,
      );
      expect(await conn.echo(1500)).toBe(false);
      expect(await lab.counter(lab.hosts[0]!, "zt_cut")).toBeGreaterThanOrEqual(1);
    } finally {
      conn.close();
    }
  });

  /** Packets a rule of table inet zt counted, found by its comment. */
  async function ruleCount(ns: string, chain: string, comment: string): Promise<number> {
    const json = JSON.parse(
      await lab.exec(ns, "nft", ["-j", "list", "chain", "inet", "zt", chain]),
    ) as {
      nftables: { rule?: { comment?: string; expr: { counter?: { packets: number } }[] } }[];
    };
    const rule = json.nftables.find((x) => x.rule?.comment === comment)?.rule;
    if (!rule) throw new Error(`no rule "${comment}" in chain ${chain}`);
    return rule.expr.find((x) => x.counter)?.counter?.packets ?? 0;
  }

  it("log lines are rate-limited (log.rate / log.burst) while every packet past the rate is still dropped, or accepted by audit, and counted", async () => {
    // a port scan must not flood the kernel log; the limit gates the log rule only
    const text = (mode: string) => `segments:
  web: { hosts: [${v4(0)}, "${v6(0)}"] }
  db: { hosts: [${v4(1)}, "${v6(1)}"] }
flows:
  - { from: web, to: db, ports: [tcp/443] }
mode: { default: ${mode} }
log: { rate: 1/minute, burst: 2 }
`;
    const scan: ProbeTarget[] = Array.from({ length: 12 }, (_, i) => ({
      addr: i % 2 ? v6(1) : v4(1),
      proto: "tcp",
      port: 22,
    }));

    await loadHosts(text("enforce"), [undefined, "seg:db"]);
    expect(await lab.probe(lab.hosts[0]!, [{ addr: v4(1), proto: "tcp", port: 443 }])).toEqual([
      true,
    ]);
    expect(await lab.probe(lab.hosts[0]!, scan, 1500)).toEqual(scan.map(() => false));
    const dropped = await lab.counter(lab.hosts[1]!, "zt_drop");
    const logged = await ruleCount(lab.hosts[1]!, "zt_enforce", "ZT-DROP logged (rate-limited)");
    expect(dropped).toBeGreaterThanOrEqual(12); // every SYN (and retransmission) dropped
    expect(logged).toBeGreaterThanOrEqual(1);
    expect(logged).toBeLessThanOrEqual(4); // burst 2 (+ a token the rate may have added)

    await loadHosts(text("audit"), [undefined, "seg:db"]);
    expect(await lab.probe(lab.hosts[0]!, scan)).toEqual(scan.map(() => true));
    const wouldDrop = await lab.counter(lab.hosts[1]!, "zt_would_drop");
    const auditLogged = await ruleCount(
      lab.hosts[1]!,
      "zt_audit",
      "ZT-WOULD-DROP logged (rate-limited)",
    );
    expect(wouldDrop).toBeGreaterThanOrEqual(12);
    expect(auditLogged).toBeGreaterThanOrEqual(1);
    expect(auditLogged).toBeLessThanOrEqual(4);
  });

  it(
    "random models on every host (input + output chains): the kernel connects exactly what the reference evaluator allows (property)",
    { timeout: 300_000 },
    async () => {
      const probes = allProbes();
      await fc.assert(
        fc.asyncProperty(modelArb, async (m) => {
          const text = toYaml(m);
          const { model } = parseSegModel(text);
          const ev = new FlowEvaluator(model);
          await lab.reset();
          for (let i = 0; i < HOST_COUNT; i++) {
            const ns = lab.hosts[i]!;
            const h = m.hosts[i]!;
            if (h.seg < 0) continue;
            const target =
              h.target === "segment"
                ? { kind: "segment" as const, segment: SEGS[h.seg]! }
                : { kind: "host" as const, host: `h${i}` };
            await lab.nft(ns, compileNftables(model, { target }).text);
          }
          const allowed = new Set<string>();
          for (const p of probes) {
            const src = p.addr.includes(":") ? NetnsLab.addr6(p.from) : NetnsLab.addr4(p.from);
            const v = ev.evaluate({ src, dst: p.addr, proto: p.proto, port: p.port });
            const sender = m.hosts[p.from]!.seg;
            const receiver = m.hosts[p.to]!.seg;
            // the sender filters only when its segment has egress (then it has an output chain)
            const outOk = sender < 0 || m.egress[sender] === undefined || v.verdict !== "drop";
            const inOk = receiver < 0 || v.verdict !== "drop";
            if (outOk && inOk) allowed.add(label(p));
          }
          const connected = await runProbes(probes);
          expect([...connected].sort(), text).toEqual([...allowed].sort());
        }),
        { numRuns: 5, endOnFailure: true },
      );
    },
  );
});
