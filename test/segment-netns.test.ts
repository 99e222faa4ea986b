/**
 * Proof with real packets: the compiled rulesets are loaded with the real `nft` into
 * network namespaces this test creates, and every pair of segments × ports is probed with
 * real TCP connections and UDP datagrams. Exactly the allowed flows may connect.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  compileNftables,
  FlowEvaluator,
  parseSegModel,
  type SegModel,
} from "../src/segment/index.js";
import { NetnsLab, type ProbeTarget } from "../src/segment/netns-lab.js";
import { type Probe, randomModelYaml, randomPolicyArbs } from "./helpers/netns-probes.js";
import { netnsLabForSuite, netnsLabUsable } from "./helpers/netns-lab-suite.js";

const SEGMENTS = ["frontend", "api", "data", "monitoring", "bastion"] as const;
/** The segments' hosts plus one host outside the model. */
const HOSTS = [...SEGMENTS, "outside"] as const;
const TCP_PORTS = [8443, 5432, 9100, 22, 8080, 443];
const UDP_PORTS = [53];
/** Echo servers for long-lived connections (7001 is allowed from frontend to api, 7002 never). */
const ECHO_PORTS = [7001, 7002];

function modelText(mode: string, extraFlow = ""): string {
  const segs = SEGMENTS.map(
    (s, i) => `  ${s}: { hosts: [${NetnsLab.addr4(i)}, "${NetnsLab.addr6(i)}"] }`,
  ).join("\n");
  return `segments:
${segs}
flows:
  - { from: frontend,   to: api,  ports: [tcp/8443, udp/53] }
  - { from: api,        to: data, ports: [tcp/5432] }
  - { from: monitoring, to: "*",  ports: [tcp/9100] }
  - { from: bastion,    to: "*",  ports: [tcp/22] }
${extraFlow}
egress:
  api: [tcp/443]
ingress:
  frontend: [tcp/8443]
mode: ${mode}
`;
}

const label = (p: Probe) => `${HOSTS[p.from]}->${HOSTS[p.to]} ${p.proto}/${p.port} ${p.addr}`;

const usable = await netnsLabUsable("segment packet tests");

describe.skipIf(!usable)(
  "segmentation with real packets in network namespaces",
  { timeout: 120_000 },
  () => {
    let lab: NetnsLab;
    const { allProbes, runProbes } = netnsLabForSuite({
      hostCount: HOSTS.length,
      tcpPorts: TCP_PORTS,
      udpPorts: UDP_PORTS,
      echoPorts: ECHO_PORTS,
      label,
      timeoutsMs: [1500, 3000],
      ready: (created) => (lab = created),
    });

    const clearRules = () => lab.reset();

    function expected(model: SegModel, probes: Probe[]) {
      const ev = new FlowEvaluator(model);
      const allowed = new Set<string>();
      let dropped = 0;
      let wouldDrop = 0;
      for (const p of probes) {
        const v = ev.evaluate({
          src: p.addr.includes(":") ? NetnsLab.addr6(p.from) : NetnsLab.addr4(p.from),
          dst: p.addr,
          proto: p.proto,
          port: p.port,
        });
        if (v.verdict === "drop") dropped++;
        else allowed.add(label(p));
        if (v.verdict === "would-drop") wouldDrop++;
      }
      return { allowed, dropped, wouldDrop };
    }

    it("sanity: without rules every probe connects (the lab itself works)", async () => {
      await clearRules();
      const probes = allProbes();
      const connected = await runProbes(probes);
      expect(connected.size).toBe(probes.length);
    });

    it("router, enforce: exactly the allowed flows connect, the rest is dropped and counted", async () => {
      await clearRules();
      const { model } = parseSegModel(modelText("{ default: enforce }"));
      // another tool's table must survive zt's atomic replace
      await lab.nft(
        lab.router,
        "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t}\n}\n",
      );
      const ruleset = compileNftables(model).text;
      await lab.nft(lab.router, ruleset);
      await lab.nft(lab.router, ruleset); // re-applying replaces, never duplicates
      const probes = allProbes();
      const connected = await runProbes(probes);
      const exp = expected(model, probes);
      // hand-written spot checks, independent of the evaluator
      expect(connected).toContain("frontend->api tcp/8443 10.250.2.10");
      expect(connected).toContain("frontend->api tcp/8443 fd00:250::2:10");
      expect(connected).toContain("frontend->api udp/53 10.250.2.10");
      expect(connected).toContain("api->data tcp/5432 fd00:250::3:10");
      expect(connected).toContain("monitoring->bastion tcp/9100 10.250.5.10");
      expect(connected).not.toContain("frontend->data tcp/5432 10.250.3.10");
      expect(connected).not.toContain("data->api tcp/5432 10.250.2.10");
      expect(connected).not.toContain("api->frontend tcp/8443 10.250.1.10");
      expect(connected).not.toContain("frontend->api tcp/8080 10.250.2.10");
      expect(connected).toContain("outside->frontend tcp/8443 10.250.1.10"); // ingress
      expect(connected).not.toContain("outside->api tcp/8443 10.250.2.10");
      expect(connected).toContain("api->outside tcp/443 fd00:250::6:10"); // egress
      expect(connected).not.toContain("api->outside tcp/8080 10.250.6.10");
      expect(connected).not.toContain("frontend->outside tcp/443 10.250.6.10");
      expect([...connected].sort()).toEqual([...exp.allowed].sort());
      expect(exp.dropped).toBeGreaterThan(100);
      expect(await lab.counter(lab.router, "zt_drop")).toBeGreaterThanOrEqual(exp.dropped);
      expect(await lab.counter(lab.router, "zt_would_drop")).toBe(0);
      const tables = await lab.exec(lab.router, "nft", ["list", "tables"]);
      expect(tables).toContain("table inet other");
      expect(tables.match(/table inet zt/g)).toHaveLength(1);
    });

    it("router, audit by default with data enforced: everything connects except what data enforces", async () => {
      await clearRules();
      const { model } = parseSegModel(modelText("{ default: audit, enforce: [data] }"));
      await lab.nft(lab.router, compileNftables(model).text);
      const probes = allProbes();
      const connected = await runProbes(probes);
      const exp = expected(model, probes);
      expect(connected).toContain("frontend->api tcp/8080 10.250.2.10"); // would-drop, accepted
      expect(connected).not.toContain("frontend->data tcp/5432 10.250.3.10"); // data enforces
      expect(connected).toContain("data->frontend tcp/8080 10.250.1.10"); // frontend audits
      expect([...connected].sort()).toEqual([...exp.allowed].sort());
      expect(exp.wouldDrop).toBeGreaterThan(50);
      expect(await lab.counter(lab.router, "zt_would_drop")).toBeGreaterThanOrEqual(exp.wouldDrop);
      expect(await lab.counter(lab.router, "zt_drop")).toBeGreaterThanOrEqual(exp.dropped);
    });

    it("router, audit everywhere: every probe connects and the would-drop counter counts", async () => {
      await clearRules();
      const { model } = parseSegModel(modelText("{ default: audit }"));
      await lab.nft(lab.router, compileNftables(model).text);
      const probes = allProbes();
      const connected = await runProbes(probes);
      const exp = expected(model, probes);
      expect(connected.size).toBe(probes.length);
      expect(await lab.counter(lab.router, "zt_would_drop")).toBeGreaterThanOrEqual(exp.wouldDrop);
      expect(await lab.counter(lab.router, "zt_drop")).toBe(0);
    });

    it(
      "random models on the router: the kernel connects exactly what the reference evaluator allows (property)",
      { timeout: 400_000 },
      async () => {
        const segs = ["s0", "s1", "s2"];
        // per lab host: no segment or one of s0..s2, and how each family is written
        const hostArb = fc.record({
          seg: fc.integer({ min: -1, max: segs.length - 1 }),
          v4: fc.constantFrom("none", "addr", "net", "mapped"),
          v6: fc.constantFrom("none", "addr", "net"),
        });
        const modelArb = fc.record({
          hosts: fc.array(hostArb, { minLength: HOSTS.length, maxLength: HOSTS.length }),
          ...randomPolicyArbs(segs),
        });
        const toYaml = (m: typeof modelArb extends fc.Arbitrary<infer T> ? T : never) =>
          randomModelYaml(segs, m, (seg) =>
            m.hosts.flatMap((h, i) => {
              if (h.seg !== seg) return [];
              const n = i + 1;
              const v4 = {
                none: [],
                addr: [NetnsLab.addr4(i)],
                net: [`10.250.${n}.0/24`],
                mapped: [`"::ffff:${NetnsLab.addr4(i)}"`],
              }[h.v4];
              const v6 = {
                none: [],
                addr: [`"${NetnsLab.addr6(i)}"`],
                net: [`"fd00:250::${n}:0/112"`],
              }[h.v6];
              return [...v4, ...v6];
            }),
          );
        const ports: [ProbeTarget["proto"], number][] = [
          ["tcp", 22],
          ["tcp", 443],
          ["tcp", 8443],
          ["udp", 53],
        ];
        const probes = allProbes().filter((p) =>
          ports.some(([pr, n]) => pr === p.proto && n === p.port),
        );
        await fc.assert(
          fc.asyncProperty(modelArb, async (m) => {
            const text = toYaml(m);
            const { model } = parseSegModel(text);
            await clearRules();
            await lab.nft(lab.router, compileNftables(model).text);
            const connected = await runProbes(probes);
            const exp = expected(model, probes);
            expect([...connected].sort(), text).toEqual([...exp.allowed].sort());
          }),
          { numRuns: 8, endOnFailure: true },
        );
      },
    );

    it("per segment on each host (input + output chains): exactly the allowed flows connect", async () => {
      await clearRules();
      const { model } = parseSegModel(modelText("{ default: enforce }"));
      for (let i = 0; i < SEGMENTS.length; i++) {
        await lab.nft(
          lab.hosts[i]!,
          compileNftables(model, { target: { kind: "segment", segment: SEGMENTS[i]! } }).text,
        );
      }
      const probes = allProbes();
      const connected = await runProbes(probes);
      const exp = expected(model, probes);
      // per host, outbound traffic is filtered only for segments with an egress entry
      const outside = HOSTS.length - 1;
      for (const p of probes) {
        if (p.to === outside && SEGMENTS[p.from] !== "api") exp.allowed.add(label(p));
      }
      expect(connected).toContain("frontend->api tcp/8443 fd00:250::2:10");
      expect(connected).not.toContain("frontend->data tcp/5432 10.250.3.10");
      expect(connected).toContain("outside->frontend tcp/8443 fd00:250::1:10");
      expect(connected).not.toContain("api->outside tcp/8080 10.250.6.10"); // api's output chain
      expect([...connected].sort()).toEqual([...exp.allowed].sort());
      let drops = 0;
      for (const h of lab.hosts.slice(0, SEGMENTS.length)) drops += await lab.counter(h, "zt_drop");
      expect(drops).toBeGreaterThanOrEqual(exp.dropped);
    });

    it("rate limit: only a burst of new connections passes", async () => {
      await clearRules();
      const text = modelText("{ default: enforce }").replace(
        '  - { from: bastion,    to: "*",  ports: [tcp/22] }',
        '  - { from: bastion,    to: "*",  ports: [tcp/22], rate: 3/minute, burst: 3 }',
      );
      const { model } = parseSegModel(text);
      await lab.nft(lab.router, compileNftables(model).text);
      const probes: ProbeTarget[] = Array.from({ length: 10 }, () => ({
        addr: NetnsLab.addr4(0),
        proto: "tcp",
        port: 22,
      }));
      const res = await lab.probe(lab.hosts[4]!, probes);
      const ok = res.filter(Boolean).length;
      expect(ok).toBeGreaterThanOrEqual(1);
      expect(ok).toBeLessThanOrEqual(4);
      expect(await lab.counter(lab.router, "zt_drop")).toBeGreaterThanOrEqual(10 - ok);
    });

    it("an IPv4 host written as ::ffff:a.b.c.d is filtered exactly as if written as IPv4", async () => {
      await clearRules();
      // frontend may reach anything *outside* the model on any TCP port: data and api must
      // not count as outside just because they are written as IPv4-mapped IPv6
      const plainText = modelText("{ default: enforce }")
        .replace("egress:\n  api: [tcp/443]", "egress:\n  api: [tcp/443]\n  frontend: [tcp]")
        .replace(`api: { hosts: [${NetnsLab.addr4(1)},`, `api: { hosts: [10.250.2.0/24,`);
      const mappedText = plainText
        .replace(
          `data: { hosts: [${NetnsLab.addr4(2)},`,
          `data: { hosts: ["::ffff:${NetnsLab.addr4(2)}",`,
        )
        .replace(`api: { hosts: [10.250.2.0/24,`, `api: { hosts: ["::ffff:10.250.2.0/120",`);
      expect(mappedText).toContain('"::ffff:10.250.3.10"');
      const plain = parseSegModel(plainText).model;
      const mapped = parseSegModel(mappedText).model;
      const ruleset = compileNftables(mapped).text;
      expect(ruleset).not.toContain("::ffff");
      await lab.nft(lab.router, ruleset);
      const probes = allProbes();
      const connected = await runProbes(probes);
      expect(connected).not.toContain("frontend->data tcp/5432 10.250.3.10");
      expect(connected).not.toContain("frontend->api tcp/8080 10.250.2.10");
      expect(connected).toContain("frontend->api tcp/8443 10.250.2.10");
      expect(connected).toContain("api->data tcp/5432 10.250.3.10");
      expect(connected).toContain("frontend->outside tcp/8080 10.250.6.10"); // real egress
      expect([...connected].sort()).toEqual([...expected(plain, probes).allowed].sort());
    });

    it("a label with newlines stays inside one comment: it cannot add nft commands", async () => {
      await clearRules();
      await lab.nft(
        lab.router,
        "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t}\n}\n",
      );
      const { model } = parseSegModel(modelText("{ default: enforce }"));
      const ruleset = compileNftables(model, {
        label: "model x\nflush ruleset\n# y.yaml sha256:0",
      }).text;
      await lab.nft(lab.router, ruleset);
      const tables = await lab.exec(lab.router, "nft", ["list", "tables"]);
      expect(tables).toContain("table inet other");
      expect(tables).toContain("table inet zt");
    });

    /** Long-lived connections from frontend, opened while everything audits. */
    async function openConnections() {
      const fe = lab.hosts[0]!;
      return {
        allowed4: await lab.connect(fe, NetnsLab.addr4(1), 7001),
        allowed6: await lab.connect(fe, NetnsLab.addr6(1), 7001),
        denied4: await lab.connect(fe, NetnsLab.addr4(1), 7002),
        denied6: await lab.connect(fe, NetnsLab.addr6(1), 7002),
        toAudited: await lab.connect(fe, NetnsLab.addr4(2), 7002),
      };
    }
    /** The lab model plus frontend→api tcp/7001 (api has egress, so a host gets an output chain). */
    const echoModel = (mode: string) =>
      modelText(mode, "  - { from: frontend, to: api, ports: [tcp/7001] }");

    it("router, audit → enforce: established connections the model does not allow are cut, allowed ones go on", async () => {
      await clearRules();
      const load = (mode: string) =>
        lab.nft(lab.router, compileNftables(parseSegModel(echoModel(mode)).model).text);
      await load("{ default: audit }");
      const c = await openConnections();
      try {
        for (const conn of Object.values(c)) expect(await conn.echo(5000)).toBe(true);
        // api (frontend→api:7002 is not allowed) enforces; data (frontend→data:7002) still audits
        await load("{ default: audit, enforce: [api] }");
        expect(await c.allowed4.echo(5000)).toBe(true);
        expect(await c.allowed6.echo(5000)).toBe(true);
        expect(await c.toAudited.echo(5000)).toBe(true);
        expect(await c.denied4.echo(1500)).toBe(false);
        expect(await c.denied6.echo(1500)).toBe(false);
        expect(await lab.counter(lab.router, "zt_cut")).toBeGreaterThan(0);
        // new connections are dropped as before
        const [fresh] = await lab.probe(lab.hosts[0]!, [
          { addr: NetnsLab.addr4(1), proto: "tcp", port: 7002 },
        ]);
        expect(fresh).toBe(false);
        await load("{ default: enforce }");
        expect(await c.toAudited.echo(1500)).toBe(false);
        expect(await c.allowed4.echo(5000)).toBe(true);
      } finally {
        for (const conn of Object.values(c)) conn.close();
      }
    });

    it("host ruleset (input + output), audit → enforce: the same on the server itself", async () => {
      await clearRules();
      // api has egress, so it gets an output chain: replies leave through it
      const load = (mode: string) =>
        lab.nft(
          lab.hosts[1]!,
          compileNftables(parseSegModel(echoModel(mode)).model, {
            target: { kind: "segment", segment: "api" },
          }).text,
        );
      await load("{ default: audit }");
      const c = await openConnections();
      try {
        for (const conn of [c.allowed4, c.allowed6, c.denied4, c.denied6])
          expect(await conn.echo(5000)).toBe(true);
        await load("{ default: enforce }");
        expect(await c.allowed4.echo(5000)).toBe(true);
        expect(await c.allowed6.echo(5000)).toBe(true);
        expect(await c.denied4.echo(1500)).toBe(false);
        expect(await c.denied6.echo(1500)).toBe(false);
        expect(await lab.counter(lab.hosts[1]!, "zt_cut")).toBeGreaterThan(0);
      } finally {
        for (const conn of Object.values(c)) conn.close();
      }
    });
  },
);
