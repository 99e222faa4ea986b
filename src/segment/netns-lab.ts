import { spawn, execFile, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/**
 * A throw-away lab of Linux network namespaces for tests and benchmarks: one router
 * namespace joined by a veth pair to each host namespace. Host i has 10.250.i.10/24 and
 * fd00:250::i:10/112; the router side has .1 / ::i:1. Addresses exist only inside the
 * namespaces the lab created. Needs root and `ip`; `nft` for rulesets.
 */
export class NetnsLab {
  readonly prefix: string;
  readonly router: string;
  readonly hosts: string[];
  readonly #children = new Set<ChildProcess>();
  #created: string[] = [];

  private constructor(prefix: string, hosts: number) {
    this.prefix = prefix;
    this.router = `${prefix}-r`;
    this.hosts = Array.from({ length: hosts }, (_, i) => `${prefix}-${i + 1}`);
  }

  static addr4(i: number): string {
    return `10.250.${i + 1}.10`;
  }

  static addr6(i: number): string {
    return `fd00:250::${i + 1}:10`;
  }

  /** Creates the namespaces and links; destroys what it made when a step fails. */
  static async create(hostCount: number): Promise<NetnsLab> {
    const lab = new NetnsLab(`zt-t${randomBytes(3).toString("hex")}`, hostCount);
    try {
      await lab.#build();
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  /** True when this kernel lets us make network namespaces (root, no seccomp block). */
  static async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const name = `zt-t${randomBytes(3).toString("hex")}-probe`;
    try {
      await execFileP("ip", ["netns", "add", name]);
      await execFileP("ip", ["netns", "del", name]);
      await execFileP("nft", ["--version"]);
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: (e as Error).message.split("\n")[0] ?? "unknown" };
    }
  }

  async #build(): Promise<void> {
    const ip = (...args: string[]) => execFileP("ip", args);
    for (const ns of [this.router, ...this.hosts]) {
      await ip("netns", "add", ns);
      this.#created.push(ns);
      await ip("-n", ns, "link", "set", "lo", "up");
    }
    await this.exec(this.router, "sysctl", [
      "-qw",
      "net.ipv4.ip_forward=1",
      "net.ipv6.conf.all.forwarding=1",
    ]);
    for (let i = 0; i < this.hosts.length; i++) {
      const h = this.hosts[i]!;
      const n = i + 1;
      await ip(
        "-n",
        this.router,
        "link",
        "add",
        `h${n}`,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        h,
      );
      await ip("-n", this.router, "addr", "add", `10.250.${n}.1/24`, "dev", `h${n}`);
      await ip("-n", this.router, "addr", "add", `fd00:250::${n}:1/112`, "dev", `h${n}`, "nodad");
      await ip("-n", this.router, "link", "set", `h${n}`, "up");
      await ip("-n", h, "addr", "add", `${NetnsLab.addr4(i)}/24`, "dev", "eth0");
      await ip("-n", h, "addr", "add", `${NetnsLab.addr6(i)}/112`, "dev", "eth0", "nodad");
      await ip("-n", h, "link", "set", "eth0", "up");
      await ip("-n", h, "route", "add", "default", "via", `10.250.${n}.1`);
      await ip("-n", h, "-6", "route", "add", "default", "via", `fd00:250::${n}:1`);
    }
  }

  /** Runs a command inside a namespace and returns its stdout. */
  async exec(ns: string, cmd: string, args: string[], input?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn("ip", ["netns", "exec", ns, cmd, ...args], {
        stdio: ["pipe", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("error", reject);
      child.stdin.on("error", () => undefined); // the command may exit before reading its input
      child.on("close", (code) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`${cmd} ${args.join(" ")} in ${ns}: exit ${code}: ${err.trim()}`)),
      );
      child.stdin.end(input ?? "");
    });
  }

  /** Loads an nft script into a namespace (`nft -f -`). */
  async nft(ns: string, script: string): Promise<void> {
    await this.exec(ns, "nft", ["-f", "-"], script);
  }

  /** Reads a named counter of table inet zt. */
  async counter(ns: string, name: string): Promise<number> {
    const json = JSON.parse(
      await this.exec(ns, "nft", ["-j", "list", "counter", "inet", "zt", name]),
    ) as {
      nftables: { counter?: { packets: number } }[];
    };
    return json.nftables.find((x) => x.counter)?.counter?.packets ?? 0;
  }

  /** Starts TCP listeners and UDP echo servers on every port, on :: (IPv4 too), in every host. */
  async listen(tcp: number[], udp: number[]): Promise<void> {
    const script = `
const net = require("node:net"), dgram = require("node:dgram");
const [tcp, udp] = JSON.parse(process.argv[1]);
let pending = tcp.length + udp.length;
const ready = () => { if (--pending === 0) process.stdout.write("ready\\n"); };
for (const p of tcp) net.createServer((s) => { s.on("error", () => {}); s.end("ok"); }).listen({ port: p, host: "::", ipv6Only: false }, ready);
for (const p of udp) { const s = dgram.createSocket({ type: "udp6", ipv6Only: false }); s.on("message", (m, r) => s.send("pong", r.port, r.address)); s.bind(p, "::", ready); }
process.stdin.on("end", () => process.exit(0)); process.stdin.resume();`;
    await Promise.all(
      this.hosts.map(
        (h) =>
          new Promise<void>((resolve, reject) => {
            const child = spawn(
              "ip",
              ["netns", "exec", h, process.execPath, "-e", script, JSON.stringify([tcp, udp])],
              {
                stdio: ["pipe", "pipe", "inherit"],
              },
            );
            this.#children.add(child);
            child.on("error", reject);
            child.on("exit", (code) => reject(new Error(`listener in ${h} exited ${code}`)));
            child.stdout.once("data", () => resolve());
          }),
      ),
    );
  }

  /** Probes targets from one namespace in parallel; returns, per target, whether it connected. */
  async probe(ns: string, targets: ProbeTarget[], timeoutMs = 2000): Promise<boolean[]> {
    const script = `
const net = require("node:net"), dgram = require("node:dgram");
const [targets, timeout] = JSON.parse(process.argv[1]);
const one = (t) => new Promise((resolve) => {
  const timer = setTimeout(() => done(false), timeout);
  let sock;
  const done = (ok) => { clearTimeout(timer); try { sock.destroy ? sock.destroy() : sock.close(); } catch {} resolve(ok); };
  if (t.proto === "tcp") {
    sock = net.connect({ host: t.addr, port: t.port });
    sock.on("connect", () => done(true));
    sock.on("error", () => done(false));
  } else {
    sock = dgram.createSocket(t.addr.includes(":") ? "udp6" : "udp4");
    sock.on("message", () => done(true));
    sock.on("error", () => done(false));
    sock.send("ping", t.port, t.addr);
  }
});
Promise.all(targets.map(one)).then((r) => process.stdout.write(JSON.stringify(r)));`;
    const out = await this.exec(ns, process.execPath, [
      "-e",
      script,
      JSON.stringify([targets, timeoutMs]),
    ]);
    return JSON.parse(out) as boolean[];
  }

  /** Kills listeners and deletes every namespace the lab made (veths go with them). */
  async destroy(): Promise<void> {
    for (const c of this.#children) {
      c.removeAllListeners("exit");
      c.kill("SIGKILL");
    }
    this.#children.clear();
    for (const ns of this.#created.reverse())
      await execFileP("ip", ["netns", "del", ns]).catch(() => undefined);
    this.#created = [];
  }
}

export interface ProbeTarget {
  addr: string;
  proto: "tcp" | "udp";
  port: number;
}
