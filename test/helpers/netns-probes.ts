/**
 * Shared parts of the packet tests in network namespaces (segment-netns, segment-host-netns):
 * the probe matrix, probing it with a second chance for what did not connect, and random
 * segmentation models (fast-check) written out as segments.yaml.
 */
import fc from "fast-check";
import { NetnsLab, type ProbeTarget } from "../../src/segment/netns-lab.js";

/** One probe from lab host `from` to an address of lab host `to`. */
export interface Probe extends ProbeTarget {
  from: number;
  to: number;
}

/** Every host to every other host, over IPv4 and IPv6, on each TCP and UDP port. */
export function allProbes(hostCount: number, tcpPorts: number[], udpPorts: number[]): Probe[] {
  const out: Probe[] = [];
  for (let a = 0; a < hostCount; a++) {
    for (let b = 0; b < hostCount; b++) {
      if (a === b) continue;
      for (const addr of [NetnsLab.addr4(b), NetnsLab.addr6(b)]) {
        for (const port of tcpPorts) out.push({ from: a, to: b, addr, proto: "tcp", port });
        for (const port of udpPorts) out.push({ from: a, to: b, addr, proto: "udp", port });
      }
    }
  }
  return out;
}

/**
 * Probes from every host namespace in parallel and returns the labels that connected. What
 * did not connect is probed once more with the longer timeout, so a loaded machine cannot
 * turn an allowed flow into a false "dropped" (a dropped one stays dropped).
 */
export async function runProbes(
  lab: NetnsLab,
  probes: Probe[],
  label: (p: Probe) => string,
  timeoutsMs: [first: number, second: number],
): Promise<Set<string>> {
  const connected = new Set<string>();
  const pass = async (list: Probe[], timeoutMs: number) => {
    await Promise.all(
      lab.hosts.map(async (ns, a) => {
        const mine = list.filter((p) => p.from === a);
        if (mine.length === 0) return;
        const res = await lab.probe(ns, mine, timeoutMs);
        mine.forEach((p, i) => {
          if (res[i]) connected.add(label(p));
        });
      }),
    );
  };
  await pass(probes, timeoutsMs[0]);
  await pass(
    probes.filter((p) => !connected.has(label(p))),
    timeoutsMs[1],
  );
  return connected;
}

const PORT_SPECS = [
  "tcp",
  "tcp/22",
  "tcp/0-22",
  "tcp/23-8443",
  "tcp/443-65535",
  "tcp/8443",
  "udp",
  "udp/53",
  "udp/0-52",
  "icmp",
] as const;

/**
 * Random flows, egress and ingress lists and modes over the segments `segs`, to combine
 * with a test's own random hosts (`fc.record({ hosts, ...randomPolicyArbs(segs) })`).
 */
export function randomPolicyArbs(segs: readonly string[]) {
  const portsArb = fc.uniqueArray(fc.constantFrom(...PORT_SPECS), { minLength: 1, maxLength: 3 });
  const peerArb = fc.constantFrom(...segs, "*");
  const perSegment = fc.array(fc.option(portsArb, { nil: undefined }), {
    minLength: segs.length,
    maxLength: segs.length,
  });
  return {
    flows: fc.array(
      fc.record({ from: peerArb, to: peerArb, ports: portsArb, rate: fc.boolean() }),
      {
        maxLength: 5,
      },
    ),
    egress: perSegment,
    ingress: perSegment,
    defaultMode: fc.constantFrom("enforce" as const, "audit" as const),
    audit: fc.subarray([...segs]),
  };
}

/** A value drawn from `randomPolicyArbs`. */
export type RandomPolicy = {
  [K in keyof ReturnType<typeof randomPolicyArbs>]: ReturnType<
    typeof randomPolicyArbs
  >[K] extends fc.Arbitrary<infer T>
    ? T
    : never;
};

/**
 * segments.yaml for a random policy: `hostsOf(i)` gives the `hosts:` entries of segment i
 * (each already YAML). One segment at most is listed under `enforce`, the rest of the
 * non-audit ones follow the default.
 */
export function randomModelYaml(
  segs: readonly string[],
  m: RandomPolicy,
  hostsOf: (seg: number) => string[],
): string {
  const list = (ps: readonly string[]) => `[${ps.join(", ")}]`;
  const outside = (rows: (readonly string[] | undefined)[]) =>
    rows.flatMap((ps, i) => (ps ? [`  ${segs[i]}: ${list(ps)}`] : [])).join("\n");
  const enforced = segs.filter((x) => !m.audit.includes(x));
  return [
    "segments:",
    ...segs.map((x, i) => `  ${x}: { hosts: ${list(hostsOf(i))} }`),
    "flows:",
    ...m.flows.map(
      (f) =>
        `  - { from: "${f.from}", to: "${f.to}", ports: ${list(f.ports)}${f.rate ? ", rate: 100000/second, burst: 100000" : ""} }`,
    ),
    `egress:\n${outside(m.egress)}`,
    `ingress:\n${outside(m.ingress)}`,
    `mode: { default: ${m.defaultMode}, audit: ${list(m.audit)}, enforce: ${list(enforced.slice(0, 1))} }`,
    "",
  ].join("\n");
}
