/**
 * The shipped HAProxy SPOE example (examples/haproxy/haproxy-spoe.cfg and zt-spoe.conf)
 * made runnable on loopback: the test suite and bench:pep run the files operators copy,
 * not a second copy of them. Each substitution must apply, or the example has drifted.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** examples/haproxy, from bench/ (vitest) or dist/bench/ (bench:pep). */
function examplesDir(): string {
  const dir = [join(import.meta.dirname, ".."), join(import.meta.dirname, "..", "..")]
    .map((root) => join(root, "examples", "haproxy"))
    .find((d) => existsSync(join(d, "zt-spoe.conf")));
  if (!dir) throw new Error("examples/haproxy not found");
  return dir;
}

function substitute(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`examples/haproxy drifted: no "${from}"`);
  return text.replace(from, to);
}

/**
 * Writes `dir/zt-spoe.conf` and `dir/haproxy.cfg` from the examples with loopback ports
 * (plain HTTP instead of TLS) and returns the haproxy.cfg path.
 */
export function writeHaproxySpoeExample(o: {
  dir: string;
  listen: number;
  zt: number;
  upstream: number;
  spoa: number;
}): string {
  const src = examplesDir();
  writeFileSync(join(o.dir, "zt-spoe.conf"), readFileSync(join(src, "zt-spoe.conf"), "utf8"));
  let cfg = readFileSync(join(src, "haproxy-spoe.cfg"), "utf8");
  cfg = substitute(cfg, "bind :443 ssl crt /etc/haproxy/app.pem", `bind 127.0.0.1:${o.listen}`);
  cfg = substitute(
    cfg,
    "config /etc/haproxy/zt-spoe.conf",
    `config ${join(o.dir, "zt-spoe.conf")}`,
  );
  cfg = substitute(cfg, "X-Forwarded-Proto https", "X-Forwarded-Proto http");
  cfg = substitute(cfg, "server zt 127.0.0.1:8443", `server zt 127.0.0.1:${o.zt}`);
  cfg = substitute(cfg, "server app 10.0.0.5:8080", `server app 127.0.0.1:${o.upstream}`);
  cfg = substitute(cfg, "server zt 127.0.0.1:12345", `server zt 127.0.0.1:${o.spoa}`);
  const path = join(o.dir, "haproxy.cfg");
  writeFileSync(path, cfg);
  return path;
}
