/**
 * A PEP worker process (`listen.proxy_workers` > 1): forked by `zt up` with node:cluster,
 * it shares the PEP listening socket with its siblings and nothing else but the store.
 * It loads the same config, opens its own store connection, policy engine, sessions
 * and audit writer, and keeps its own live connections under continuous verification
 * (revocations reach it through the store's event bus, as they reach any replica).
 */
import cluster from "node:cluster";
import type { AddressInfo } from "node:net";
import { startBanCache } from "../audit/index.js";
import { loadConfig } from "../config/index.js";
import { isZtError } from "../core/errors.js";
import { metrics } from "../audit/metrics.js";
import { openAppContext } from "./app-context.js";
import { createPepNode, splitHostPort, startProcessVerification } from "./pep-node.js";
import { createServices } from "./services.js";

/** What the primary tells a worker (in ZT_PEP_WORKER, JSON). */
export interface PepWorkerSpec {
  configPath: string;
  /** 1-based worker number, for the PEP id in audit records and log lines. */
  index: number;
  /** Route upstreams the primary changed after loading the config (the demo app's port). */
  routeTargets?: Record<string, string>;
}

/** Messages between the primary and its PEP workers (over the cluster IPC channel). */
export type WorkerMessage =
  | { zt: "listening"; address: AddressInfo }
  | { zt: "failed"; code: string; message: string }
  | { zt: "metrics"; id: number; data: unknown };
export type PrimaryMessage = { zt: "shutdown" } | { zt: "reload" } | { zt: "metrics?"; id: number };

function send(m: WorkerMessage): void {
  process.send?.(m);
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.env["ZT_PEP_WORKER"] ?? "{}") as PepWorkerSpec;
  const log = (line: string) => process.stdout.write(`zt[w${spec.index}]: ${line}\n`);
  const config = loadConfig(spec.configPath, { env: process.env });
  if (spec.routeTargets) {
    config.routes = config.routes.map((r) =>
      spec.routeTargets![r.name] ? { ...r, to: spec.routeTargets![r.name]! } : r,
    );
  }
  const ctx = await openAppContext(config, { env: process.env });
  // Event position before any state is loaded: what commits meanwhile is delivered at start().
  await ctx.events.mark();
  const services = await createServices(ctx, {
    watchPolicies: (r) => {
      if (r.ok) log(`policies reloaded (${r.policies} policies)`);
      else log(`policy reload refused, keeping the last good set: ${r.error}`);
    },
  });
  const listen = splitHostPort(config.listen.proxy);
  const node = await createPepNode(ctx, services, {
    host: listen.host,
    pepId: `pep-${spec.index}`,
  });
  const continuous = await startProcessVerification(services, node.pep.live);
  await ctx.events.start();
  services.decisions.failClosedWhenStale();
  const stopBans = await startBanCache(ctx.store, ctx.events, () => ctx.clock.now());
  const address = await node.pep.listen(listen.host, listen.port);
  // Every worker listens on the SPOE port too; node:cluster shares it between them.
  if (config.forward_auth.spoa_listen) {
    const spoa = splitHostPort(config.forward_auth.spoa_listen);
    await node.pep.listenSpoa(spoa.host, spoa.port);
  }

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(0), 5_000);
    force.unref();
    continuous.close();
    stopBans();
    await node.close().catch(() => undefined);
    services.close();
    await ctx.close().catch(() => undefined);
    process.exit(0);
  };
  process.on("message", (m: PrimaryMessage) => {
    if (m.zt === "shutdown") void stop();
    else if (m.zt === "reload") {
      const r = services.policies.reload();
      log(r.ok ? `policies reloaded (${r.policies})` : `policy reload refused: ${r.error}`);
    } else if (m.zt === "metrics?") {
      void metrics.getMetricsAsJSON().then(
        (data) => send({ zt: "metrics", id: m.id, data }),
        () => send({ zt: "metrics", id: m.id, data: [] }),
      );
    }
  });
  // The primary went away (crashed or killed): do not outlive it.
  process.on("disconnect", () => void stop());
  // Signals go to the whole process group; the primary orchestrates the shutdown.
  process.on("SIGINT", () => undefined);
  process.on("SIGTERM", () => void stop());
  process.on("SIGHUP", () => undefined);
  send({ zt: "listening", address });
}

if (cluster.isWorker) {
  main().catch((e: unknown) => {
    send({
      zt: "failed",
      code: isZtError(e) ? e.code : "ZT_INTERNAL",
      message: e instanceof Error ? e.message : String(e),
    });
    process.exit(1);
  });
}
