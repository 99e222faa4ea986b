/**
 * The lab of a packet test in network namespaces (segment-netns, segment-host-netns): whether
 * this machine can make one, and one lab shared by the tests of a describe, its hosts
 * listening on the given ports, with the suite's probe matrix and prober.
 */
import { afterAll, beforeAll } from "vitest";
import { NetnsLab } from "../../src/segment/netns-lab.js";
import { allProbes, runProbes, type Probe } from "./netns-probes.js";

/**
 * Whether the kernel lets this test make network namespaces and `nft` is here; when not,
 * says loudly that `what` is skipped, and why.
 */
export async function netnsLabUsable(what: string): Promise<boolean> {
  const avail = await NetnsLab.available();
  if (!avail.ok) {
    console.warn(
      `\n\n*** SKIPPING ${what}: the kernel refused network namespaces or nft is missing: ${avail.reason} ***\n\n`,
    );
  }
  return avail.ok;
}

export interface NetnsLabSuiteOptions {
  hostCount: number;
  tcpPorts: number[];
  udpPorts: number[];
  /** Ports of echo servers for long-lived connections. */
  echoPorts?: number[];
  /** How a probe is named in the sets `runProbes` returns. */
  label: (p: Probe) => string;
  /** The first probe's timeout and the second chance's (see netns-probes.ts runProbes). */
  timeoutsMs: [first: number, second: number];
  /** Called with the lab once it is up, for the tests to drive it. */
  ready: (lab: NetnsLab) => void;
}

export interface NetnsLabSuite {
  /** Every host to every other host, over IPv4 and IPv6, on each TCP and UDP port. */
  allProbes(): Probe[];
  /** Probes from every host in parallel; the labels of those that connected. */
  runProbes(probes: Probe[]): Promise<Set<string>>;
}

/**
 * Creates the lab in the enclosing describe's beforeAll (handing it to `ready`) and
 * destroys it in its afterAll.
 */
export function netnsLabForSuite(o: NetnsLabSuiteOptions): NetnsLabSuite {
  let lab: NetnsLab | undefined;
  beforeAll(async () => {
    lab = await NetnsLab.create(o.hostCount);
    await lab.listen(o.tcpPorts, o.udpPorts);
    if (o.echoPorts) await lab.listenEcho(o.echoPorts);
    o.ready(lab);
  });
  afterAll(async () => {
    await lab?.destroy();
  });
  return {
    allProbes: () => allProbes(o.hostCount, o.tcpPorts, o.udpPorts),
    runProbes: (probes) => {
      if (!lab) throw new Error("the netns lab is not up (probed outside a test?)");
      return runProbes(lab, probes, o.label, o.timeoutsMs);
    },
  };
}
