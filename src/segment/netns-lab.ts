import { spawn, execFile, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/**
 * A throw-away lab of Linux network namespaces for tests and benchmarks: one router
 * namespace joined by a veth pair to each host namespace. Host i has 10.250.i.10/24 and
 * fd00:250::i:10/112; the router side has .1 / ::i:1. Addresses exist only inside the
 * namespaces the lab created. Needs root and `ip`; `nft` for rulesets, `conntrack` for
 * `reset`.
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
      // No duplicate address detection, link-local addresses included (`nodad` below covers
      // only the global ones): while a veth's link-local address is tentative, neighbour
      // discovery over it fails, and the first IPv6 probes of a fresh lab timed out.
      await this.exec(ns, "sysctl", [
        "-qw",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
      ]);
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

  /**
   * Empties every namespace's ruleset and connection-tracking table, so the next ruleset
   * sees each probe as a new connection: a datagram that happens to reuse the source port
   * of one an earlier ruleset let through would otherwise match its conntrack entry and be
   * accepted as established, before the rules under test see it. Needs `conntrack`.
   */
  async reset(): Promise<void> {
    for (const ns of [this.router, ...this.hosts]) {
      await this.exec(ns, "nft", ["flush", "ruleset"]);
      await this.exec(ns, "conntrack", ["-F"]);
    }
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
    await this.#serveInEveryHost("listener", script, [tcp, udp]);
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

  /** Starts TCP echo servers (every line comes back) on every port, on :: (IPv4 too), in every host. */
  async listenEcho(ports: number[]): Promise<void> {
    const script = `
const net = require("node:net");
const ports = JSON.parse(process.argv[1]);
let pending = ports.length;
for (const p of ports) net.createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen({ port: p, host: "::", ipv6Only: false }, () => { if (--pending === 0) process.stdout.write("ready\\n"); });
process.stdin.on("end", () => process.exit(0)); process.stdin.resume();`;
    await this.#serveInEveryHost("echo server", script, ports);
  }

  /**
   * Runs a Node server script in every host namespace, kept until the lab closes; resolves
   * once each has written its first line ("ready").
   */
  async #serveInEveryHost(what: string, script: string, arg: unknown): Promise<void> {
    await Promise.all(
      this.hosts.map(
        (h) =>
          new Promise<void>((resolve, reject) => {
            const child = spawn(
              "ip",
              ["netns", "exec", h, process.execPath, "-e", script, JSON.stringify(arg)],
              { stdio: ["pipe", "pipe", "inherit"] },
            );
            this.#children.add(child);
            child.on("error", reject);
            child.on("exit", (code) => reject(new Error(`${what} in ${h} exited ${code}`)));
            child.stdout.once("data", () => resolve());
          }),
      ),
    );
  }

  /**
   * Opens one long-lived TCP connection from a namespace (to an echo server) and keeps it:
   * `echo` sends a line over it and reports whether it came back within the timeout, so a
   * test can see whether an established connection survives a ruleset change.
   */
  async connect(ns: string, addr: string, port: number, timeoutMs = 5000): Promise<LabConnection> {
    const script = `
const net = require("node:net");
const [addr, port] = JSON.parse(process.argv[1]);
const s = net.connect({ host: addr, port });
s.setNoDelay(true);
s.on("connect", () => process.stdout.write("connected\\n"));
s.on("error", (e) => process.stdout.write("error " + e.code + "\\n"));
let buf = "";
s.on("data", (d) => { buf += d; let i; while ((i = buf.indexOf("\\n")) >= 0) { process.stdout.write("echo " + buf.slice(0, i) + "\\n"); buf = buf.slice(i + 1); } });
let inb = "";
process.stdin.on("data", (d) => { inb += d; let i; while ((i = inb.indexOf("\\n")) >= 0) { s.write(inb.slice(0, i) + "\\n"); inb = inb.slice(i + 1); } });
process.stdin.on("end", () => { s.destroy(); process.exit(0); });`;
    const child = spawn(
      "ip",
      ["netns", "exec", ns, process.execPath, "-e", script, JSON.stringify([addr, port])],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    this.#children.add(child);
    const lines: string[] = [];
    const waiters = new Set<() => void>();
    let rest = "";
    child.stdout.on("data", (d: Buffer) => {
      rest += d.toString();
      let i;
      while ((i = rest.indexOf("\n")) >= 0) {
        lines.push(rest.slice(0, i));
        rest = rest.slice(i + 1);
      }
      for (const w of waiters) w();
    });
    const waitFor = (line: string, ms: number) =>
      new Promise<boolean>((resolve) => {
        const check = () => {
          if (lines.includes(line) || lines.some((l) => l.startsWith("error "))) {
            finish(lines.includes(line));
          }
        };
        const timer = setTimeout(() => finish(false), ms);
        const finish = (ok: boolean) => {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(ok);
        };
        waiters.add(check);
        check();
      });
    if (!(await waitFor("connected", timeoutMs))) {
      child.kill("SIGKILL");
      this.#children.delete(child);
      throw new Error(`no TCP connection from ${ns} to ${addr}:${port}: ${lines.join("; ")}`);
    }
    let n = 0;
    return {
      echo: async (ms: number) => {
        const token = `t${++n}`;
        child.stdin.write(`${token}\n`);
        return waitFor(`echo ${token}`, ms);
      },
      close: () => {
        child.kill("SIGKILL");
        this.#children.delete(child);
      },
    };
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

/** A TCP connection kept open by `NetnsLab.connect`. */
export interface LabConnection {
  /** Sends a line; true when the echo server's copy came back within `ms`. */
  echo(ms: number): Promise<boolean>;
  close(): void;
}

export interface ProbeTarget {
  addr: string;
  proto: "tcp" | "udp";
  port: number;
}
