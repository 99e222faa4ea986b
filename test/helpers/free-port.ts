/**
 * A loopback TCP port nothing listens on: for a peer that must be told its port up front
 * (nginx, Caddy, HAProxy, sshd, a `zt up` child), or for a test that needs a refused
 * connection.
 *
 * Why not `listen(0)` and close: the kernel hands the port it just freed to the next
 * `listen(0)` anywhere on the machine — another test's upstream, or the zt the test starts
 * next. A front proxy that then fails to bind exits, and the test's requests reach whatever
 * took the port instead (once in CI: zt's own proxy, answering for nginx). Ports below the
 * kernel's ephemeral range are never handed out by `listen(0)`, so one of those, checked
 * free, stays free unless another test picks the same one of thousands at the same moment.
 */
import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";

/** The lowest port the kernel picks for `listen(0)` (Linux's default: 32768). */
function ephemeralLow(): number {
  try {
    const low = Number(
      readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0],
    );
    if (Number.isInteger(low) && low > 2048) return low;
  } catch {
    // not Linux, or /proc not mounted: the default below
  }
  return 32768;
}

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  const max = ephemeralLow() - 1;
  const min = Math.min(10_000, max - 1000);
  for (let i = 0; i < 100; i++) {
    const port = randomInt(min, max + 1);
    if (await bindable(port, host)) return port;
  }
  throw new Error(`no free port on ${host} in ${min}-${max} after 100 tries`);
}
