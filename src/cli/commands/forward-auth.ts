import type { Command } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCliConfig, usageError, withoutContext } from "../cli-context.js";
import {
  FRONT_PROXY_DESCRIPTIONS,
  FRONT_PROXY_KINDS,
  frontProxyConfig,
  isFrontProxyKind,
  reachableAddress,
  type FrontProxyOptions,
} from "../../proxy/front-proxy-config.js";

interface ConfigOptions {
  zt?: string;
  spoa?: string;
  bind?: string;
  route?: string;
  spoeFile?: string;
  luaFile?: string;
  printLua?: boolean;
}

/** zt's Lua action as shipped: examples/haproxy/zt-authz.lua from src/… or dist/src/…. */
function shippedLua(): string {
  const file = [3, 4]
    .map((up) =>
      join(
        import.meta.dirname,
        ...Array<string>(up).fill(".."),
        "examples",
        "haproxy",
        "zt-authz.lua",
      ),
    )
    .find((f) => existsSync(f));
  if (!file) throw usageError("zt-authz.lua is not installed with this zt (examples/haproxy/)");
  return readFileSync(file, "utf8");
}

/** `zt forward-auth config KIND` */
export function registerForwardAuthCommands(program: Command): void {
  const fa = program
    .command("forward-auth")
    .description("zt as the decision point of nginx, Caddy, Traefik or HAProxy");
  fa.command("config <kind>")
    .description(
      "print the front proxy's configuration for this zt.yaml's routes; kind:\n" +
        FRONT_PROXY_KINDS.map((k) => `  ${k.padEnd(13)} ${FRONT_PROXY_DESCRIPTIONS[k]}`).join("\n"),
    )
    .option("--zt <host:port>", "where the proxy reaches zt's PEP listener (default: listen.proxy)")
    .option(
      "--spoa <host:port>",
      "zt's SPOE agent, for haproxy (default: forward_auth.spoa_listen)",
    )
    .option("--bind <address>", "address the proxy listens on (default: all)")
    .option("--route <names>", "only these routes (comma-separated names)")
    .option(
      "--spoe-file <path>",
      "where haproxy finds the SPOE engine file",
      "/etc/haproxy/zt-spoe.conf",
    )
    .option("--lua-file <path>", "where haproxy finds zt-authz.lua", "/etc/haproxy/zt-authz.lua")
    .option("--print-lua", "haproxy-lua: print zt's Lua action (zt-authz.lua) instead")
    .action(async (kind: string, opts: ConfigOptions, cmd: Command) => {
      await withoutContext(async () => {
        if (!isFrontProxyKind(kind))
          throw usageError(
            `unknown proxy "${kind}": expected one of ${FRONT_PROXY_KINDS.join(", ")}`,
          );
        if (opts.printLua) {
          if (kind !== "haproxy-lua") throw usageError("--print-lua goes with haproxy-lua");
          process.stdout.write(shippedLua());
          return;
        }
        const config = loadCliConfig(cmd);
        if (!config.forward_auth.enabled)
          throw usageError(
            "forward-auth is off in zt.yaml (forward_auth.enabled: false): a front proxy would get 404 from /.zt/authz. Set it to true (or remove it) first",
          );
        if (config.tls && opts.zt === undefined)
          throw usageError(
            "zt's PEP listener uses TLS (tls: in zt.yaml); the generated configurations reach zt over plain HTTP. Run the listener on loopback without tls behind the front proxy, or pass --zt with a plain-HTTP listener",
          );
        let routes = config.routes;
        if (opts.route !== undefined) {
          const want = opts.route.split(",").map((s) => s.trim());
          const unknown = want.filter((n) => !routes.some((r) => r.name === n));
          if (unknown.length > 0)
            throw usageError(
              `--route: no route named ${unknown.map((n) => JSON.stringify(n)).join(", ")} (routes: ${routes.map((r) => r.name).join(", ") || "none"})`,
            );
          routes = routes.filter((r) => want.includes(r.name));
        }
        const spoa = opts.spoa ?? config.forward_auth.spoa_listen;
        const o: FrontProxyOptions = {
          routes,
          zt: opts.zt ?? reachableAddress(config.listen.proxy),
          cookieName: config.session.cookie_name,
          ...(spoa ? { spoa: reachableAddress(spoa) } : {}),
          ...(opts.bind !== undefined ? { bind: opts.bind } : {}),
          ...(opts.spoeFile !== undefined ? { spoeFile: opts.spoeFile } : {}),
          ...(opts.luaFile !== undefined ? { luaFile: opts.luaFile } : {}),
        };
        process.stdout.write(frontProxyConfig(kind, o));
        // Not an error (the output is right), but a setting that does nothing behind it.
        const listed = routes.filter((r) => (r.websocket_origins?.length ?? 0) > 0);
        if (listed.length > 0)
          process.stderr.write(
            `zt: note: websocket_origins (routes ${listed.map((r) => r.name).join(", ")}) is not enforced behind a front proxy: zt decides the WebSocket handshake but does not check its Origin there; have the proxy or the app refuse other origins (docs/pep.md#websocket-origins)\n`,
          );
      });
    });
}
