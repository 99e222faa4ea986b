import { stringify } from "yaml";
import { formatIp, type IpRange } from "./ip-range.js";
import { ANY_SEGMENT, segmentModeOf, type SegFlow, type SegModel, type Segment } from "./model.js";
import { formatPortSpec, type PortSpec } from "./port-spec.js";

export interface CompileK8sResult {
  /** Multi-document YAML of NetworkPolicy objects. */
  text: string;
  policies: number;
  /** What the model says that NetworkPolicy cannot express. */
  warnings: string[];
}

type Peer = Record<string, unknown>;
type NpPort = { protocol: "TCP" | "UDP"; port?: number; endPort?: number };

interface Block {
  cidr: string;
  range: IpRange;
}

/** Splits an arbitrary range into aligned CIDR blocks. */
function cidrsOf(r: IpRange): Block[] {
  const bits = r.family === 4 ? 32 : 128;
  const out: Block[] = [];
  let start = r.start;
  while (start <= r.end) {
    let size = 0;
    while (size < bits) {
      const block = 1n << BigInt(size + 1);
      if ((start & (block - 1n)) !== 0n || start + block - 1n > r.end) break;
      size++;
    }
    const end = start + (1n << BigInt(size)) - 1n;
    out.push({
      cidr: `${formatIp(r.family, start)}/${bits - size}`,
      range: { family: r.family, start, end },
    });
    start = end + 1n;
  }
  return out;
}

export interface CompileK8sOptions {
  /**
   * The cluster's pod networks. NetworkPolicy leaves it to the network plugin whether an
   * `ipBlock` matches pod addresses, so host segments that cover them are cut out of it:
   * the pod networks inside a segment's block become its `except`, and a block wholly inside
   * one is left out (pods are selected with `k8s` selectors, not by address).
   */
  podCidrs?: readonly IpRange[];
}

const within = (a: IpRange, b: IpRange) =>
  a.family === b.family && a.start >= b.start && a.end <= b.end;

function peersOf(seg: Segment, podBlocks: readonly Block[], warn: (m: string) => void): Peer[] {
  if (seg.k8s) {
    const peer: Peer = {
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": seg.k8s.namespace } },
    };
    peer["podSelector"] = Object.keys(seg.k8s.podSelector).length
      ? { matchLabels: seg.k8s.podSelector }
      : {};
    return [peer];
  }
  const peers: Peer[] = [];
  for (const h of seg.hosts) {
    // CIDR blocks are either nested or disjoint: a pod network is inside a block, holds it, or misses it
    for (const { cidr, range } of cidrsOf(h.range)) {
      const inside = podBlocks.find((p) => within(range, p.range));
      if (inside) {
        warn(
          `segment "${seg.name}": ${cidr} is inside the pod network ${inside.cidr}; left out of its ipBlock peers (select pods with k8s selectors)`,
        );
        continue;
      }
      const except = podBlocks.filter((p) => within(p.range, range)).map((p) => p.cidr);
      peers.push({ ipBlock: except.length ? { cidr, except } : { cidr } });
    }
  }
  return peers;
}

function npPorts(ports: readonly PortSpec[], warn: (m: string) => void, where: string): NpPort[] {
  const out: NpPort[] = [];
  for (const p of ports) {
    if (p.proto === "icmp") {
      warn(
        `${where}: icmp cannot be expressed in NetworkPolicy (TCP, UDP and SCTP only); left out`,
      );
      continue;
    }
    const protocol = p.proto === "tcp" ? "TCP" : "UDP";
    if (p.lo === 0 && p.hi === 65535) {
      out.push({ protocol });
      continue;
    }
    // the API server refuses port 0 (ports are 1-65535): the range starts at 1
    if (p.lo === 0)
      warn(`${where}: port 0 cannot be expressed in NetworkPolicy (ports are 1-65535); left out`);
    const lo = Math.max(1, p.lo!);
    if (p.hi! < lo) continue;
    if (lo === p.hi) out.push({ protocol, port: lo });
    else out.push({ protocol, port: lo, endPort: p.hi! });
  }
  return out;
}

/**
 * Compiles the model's Kubernetes segments (those with `k8s: { namespace, podSelector }`)
 * to NetworkPolicy: one default-deny (ingress + egress) per namespace, and per segment one
 * policy whose ingress and egress rules are the model's flows. Segments without k8s
 * selectors appear as `ipBlock` peers. Pure: model in, YAML out.
 */
export function compileK8s(model: SegModel, opts: CompileK8sOptions = {}): CompileK8sResult {
  const warnings: string[] = [];
  const warn = (m: string) => {
    if (!warnings.includes(m)) warnings.push(m);
  };
  const podBlocks = (opts.podCidrs ?? []).flatMap(cidrsOf);
  const addressPeers = new Set<string>();
  const peers = (seg: Segment): Peer[] => {
    if (!seg.k8s && seg.hosts.length) addressPeers.add(seg.name);
    return peersOf(seg, podBlocks, warn);
  };
  const byName = new Map(model.segments.map((s) => [s.name, s]));
  const expand = (name: string): Segment[] =>
    name === ANY_SEGMENT ? model.segments : [byName.get(name)!];
  const k8sSegs = model.segments.filter((s) => s.k8s);
  const docs: Record<string, unknown>[] = [];
  const auditNs = new Set<string>();
  for (const s of k8sSegs) {
    if (segmentModeOf(model, s.name) === "audit") {
      auditNs.add(s.k8s!.namespace);
      warn(
        `segment "${s.name}" is in audit mode: NetworkPolicy has no audit/log action, so no policy is emitted for it, namespace "${s.k8s!.namespace}" gets no default-deny, and enforcing segments may send it anything`,
      );
    }
  }
  const namespaces = [...new Set(k8sSegs.map((s) => s.k8s!.namespace))].sort();
  for (const ns of namespaces) {
    if (auditNs.has(ns)) continue;
    docs.push({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: {
        name: "zt-default-deny",
        namespace: ns,
        labels: { "app.kubernetes.io/managed-by": "zt" },
      },
      spec: { podSelector: {}, policyTypes: ["Ingress", "Egress"] },
    });
  }
  const flowWhere = (f: SegFlow) => `flows[${f.index}]`;
  // The model lets every packet to a segment in audit through (a would-drop, as in the
  // nftables rulesets: a dropped packet takes its destination's mode). Without this, an
  // enforcing segment's egress cut its traffic to segments still auditing.
  const toAudit = model.segments
    .filter((t) => segmentModeOf(model, t.name) === "audit")
    .flatMap(peers);
  for (const s of k8sSegs) {
    if (segmentModeOf(model, s.name) === "audit") continue;
    const ingress: Record<string, unknown>[] = [];
    const egress: Record<string, unknown>[] = [];
    for (const f of model.flows) {
      if (f.rate)
        warn(
          `${flowWhere(f)}: rate limits cannot be expressed in NetworkPolicy; the flow is allowed without a limit`,
        );
      if (f.to === ANY_SEGMENT || f.to === s.name) {
        const ports = npPorts(f.ports, warn, flowWhere(f));
        const from = expand(f.from).flatMap(peers);
        if (ports.length && from.length) ingress.push({ from, ports });
      }
      if (f.from === ANY_SEGMENT || f.from === s.name) {
        const ports = npPorts(f.ports, warn, flowWhere(f));
        const to = expand(f.to).flatMap(peers);
        if (ports.length && to.length) egress.push({ to, ports });
      }
    }
    if (toAudit.length) egress.push({ to: toAudit });
    const ing = model.ingress.get(s.name);
    if (ing) {
      const ports = npPorts(ing, warn, `ingress.${s.name}`);
      if (ports.length) ingress.push({ ports });
      warn(
        `ingress.${s.name}: NetworkPolicy cannot say "outside the model"; ${ing.map(formatPortSpec).join(", ")} are allowed from any source`,
      );
    }
    const eg = model.egress.get(s.name);
    if (eg) {
      const ports = npPorts(eg, warn, `egress.${s.name}`);
      if (ports.length) egress.push({ ports });
      warn(
        `egress.${s.name}: NetworkPolicy cannot say "outside the model"; ${eg.map(formatPortSpec).join(", ")} are allowed to any destination`,
      );
    }
    docs.push({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: {
        name: `zt-${s.name}`,
        namespace: s.k8s!.namespace,
        labels: { "app.kubernetes.io/managed-by": "zt", "zt.dev/segment": s.name },
      },
      spec: {
        podSelector: Object.keys(s.k8s!.podSelector).length
          ? { matchLabels: s.k8s!.podSelector }
          : {},
        policyTypes: ["Ingress", "Egress"],
        ingress,
        egress,
      },
    });
  }
  if (k8sSegs.length === 0) warn("no segment has k8s selectors: nothing to emit");
  if (addressPeers.size && podBlocks.length === 0)
    warn(
      `segments ${[...addressPeers].map((n) => JSON.stringify(n)).join(", ")} appear as ipBlock peers: whether an ipBlock also matches pod addresses is up to the network plugin, so if one covers the pod network, give --pod-cidr to cut it out`,
    );
  warn(
    "NetworkPolicy has no explicit deny and no logging: denied traffic is dropped silently (use the CNI's flow logs)",
  );
  const header = "# zt NetworkPolicy: generated by `zt seg compile --target k8s`; do not edit.\n";
  const text = header + docs.map((d) => stringify(d, { lineWidth: 0 })).join("---\n");
  return { text, policies: docs.length, warnings };
}
