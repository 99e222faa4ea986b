/**
 * A PEP worker process (`listen.proxy_workers` > 1): forked by `zt up` with node:cluster,
 * it shares the PEP listening socket with its siblings and nothing else but the store.
 * It runs the config the primary runs (handed over the IPC channel at start and with
 * each reload, never read from zt.yaml), opens its own store connection, policy engine,
 * sessions and audit writer, and keeps its own live connections under continuous
 * verification (revocations reach it through the store's event bus, as they reach any
 * replica).
 */
import cluster from "node:cluster";
import type { AddressInfo } from "node:net";
import { startBanCache } from "../audit/index.js";
import type { ZtConfig } from "../config/index.js";
import { isZtError } from "../core/errors.js";
import { metrics } from "../audit/metrics.js";
import type { StoreFreshness } from "../events/index.js";
import { openAppContext } from "./app-context.js";
import { createPepNode, splitHostPort, startProcessVerification } from "./pep-node.js";
import { createServices } from "./services.js";
import { ConfigReloader } from "./config-reloader.js";

/** What the primary tells a worker at fork (in ZT_PEP_WORKER, JSON). */
export interface PepWorkerSpec {
  /** 1-based worker number, for the PEP id in audit records and log lines. */
  index: number;
}

/** What a listening worker answers when the primary asks for its readiness. */
export interface PepWorkerStatus {
  policy_version: string;
  /** The last refused reload's error, while the last good set stays in force. */
  policy_error: string | null;
  /** The primary's reload generation this worker has applied (see PrimaryMessage "reload"). */
  reload_generation: number;
  /** Digest of the reloadable config settings it runs (see reloadableConfigVersion). */
  config_version: string;
  /** Why it could not apply the primary's last config reload (it runs the one before). */
  config_error: string | null;
  store: StoreFreshness;
  store_last_contact_ms: number;
}

/** Messages between the primary and its PEP workers (over the cluster IPC channel). */
export type WorkerMessage =
  | { zt: "config?" }
  | { zt: "listening"; address: AddressInfo; generation: number }
  | { zt: "failed"; code: string; message: string }
  | { zt: "metrics"; id: number; data: unknown }
  | { zt: "status"; id: number; status: PepWorkerStatus };
export type PrimaryMessage =
  /**
   * The config the primary runs (env overrides and the demo's upstream included), and
   * its reload generation at the time: the worker loads its policy set after this.
   */
  | { zt: "config"; config: ZtConfig; generation: number }
  | { zt: "shutdown" }
  /**
   * Reload: run `config` (the primary's after its reload: the worker applies its
   * reloadable keys) and reload the policy set; `generation` counts the primary's
   * reloads (SIGHUP).
   */
  | { zt: "reload"; generation: number; config: ZtConfig }
  | { zt: "metrics?"; id: number }
  | { zt: "status?"; id: number };

function send(m: WorkerMessage): void {
  process.send?.(m);
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.env["ZT_PEP_WORKER"] ?? "{}") as PepWorkerSpec;
  const log = (line: string) => process.stdout.write(`zt[w${spec.index}]: ${line}\n`);
  // One handler for the whole life of the process. Until the worker runs, a reload is
  // not applied here: the worker reports the generation it started from when it
  // listens, and the primary sends the reload again if it is behind.
  let running = undefined as ((m: PrimaryMessage) => void) | undefined;
  let gotConfig: ((m: { config: ZtConfig; generation: number }) => void) | undefined;
  process.on("message", (m: PrimaryMessage) => {
    if (running) running(m);
    else if (m.zt === "config") gotConfig?.(m);
    else if (m.zt === "shutdown") process.exit(0);
  });
  // Signals go to the whole process group; the primary orchestrates the shutdown (and
  // SIGHUP's default action would end a worker still starting).
  let stop = (): unknown => process.exit(0);
  process.on("SIGINT", () => undefined);
  process.on("SIGHUP", () => undefined);
  process.on("SIGTERM", () => void stop());
  // The primary went away (crashed or killed): do not outlive it.
  process.on("disconnect", () => void stop());
  const given = await new Promise<{ config: ZtConfig; generation: number }>((resolve) => {
    gotConfig = resolve;
    send({ zt: "config?" });
  });
  const config = given.config;
  let generation = given.generation;
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
  const configs = new ConfigReloader({ ctx, services, pep: node, log, primary: false });
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
  stop = async () => {
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
  running = (m) => {
    if (m.zt === "shutdown") void stop();
    else if (m.zt === "reload") {
      // Reloads apply one at a time, in order; the generation counts one as applied only
      // once its config is (a worker that could not stays behind, and /readyz says so).
      void configs
        .reload(() => m.config)
        .then((c) => {
          const r = services.policies.reload();
          if (c.ok) generation = Math.max(generation, m.generation);
          log(r.ok ? `policies reloaded (${r.policies})` : `policy reload refused: ${r.error}`);
        });
    } else if (m.zt === "metrics?") {
      void metrics.getMetricsAsJSON().then(
        (data) => send({ zt: "metrics", id: m.id, data }),
        () => send({ zt: "metrics", id: m.id, data: [] }),
      );
    } else if (m.zt === "status?") {
      send({
        zt: "status",
        id: m.id,
        status: {
          policy_version: services.policies.engine.policySet.version,
          policy_error: services.policies.lastError ?? null,
          reload_generation: generation,
          config_version: configs.status().config_version,
          config_error: configs.status().config_error,
          store: services.decisions.storeFreshness(),
          store_last_contact_ms: ctx.events.lastContactMs(),
        },
      });
    }
  };
  send({ zt: "listening", address, generation });
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
