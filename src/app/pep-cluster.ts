/**
 * `listen.proxy_workers` > 1: the PEP runs in N worker processes (node:cluster) that
 * share the listening socket (the kernel spreads connections: SCHED_NONE, no hop
 * through the primary) and nothing else but the store. The primary starts them after
 * it has initialised the store and the PKI, waits until every one listens, replaces a
 * worker that dies, and stops them on close.
 */
import cluster, { type Worker } from "node:cluster";
import { existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ERROR_TABLE, ZtError, type ZtErrorCode } from "../core/errors.js";
import type { PepWorkerSpec, PrimaryMessage, WorkerMessage } from "./pep-worker.js";

export interface PepCluster {
  readonly address: AddressInfo;
  readonly size: number;
  /** How many workers listen now (a dead one and its replacement until it listens do not). */
  listening(): number;
  /** Asks every worker to reload its policy set (SIGHUP on the primary). */
  reloadPolicies(): void;
  /** Each live worker's metrics registry as JSON (prom-client), for aggregation. */
  workerMetrics(): Promise<unknown[]>;
  close(): Promise<void>;
}

/** The compiled worker entry (workers are plain Node processes, also under the test runner). */
function workerEntry(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json"))) break;
    dir = dirname(dir);
  }
  const entry = join(dir, "dist", "src", "app", "pep-worker.js");
  if (!existsSync(entry)) {
    throw new ZtError(
      "ZT_INTERNAL",
      `PEP worker entry ${entry} is missing: run npm run build (or set listen.proxy_workers: 1)`,
    );
  }
  return entry;
}

const READY_TIMEOUT_MS = 60_000;
const MAX_RESTARTS_PER_MINUTE = 10;

export async function startPepCluster(o: {
  workers: number;
  configPath: string;
  routeTargets?: Record<string, string>;
  out: (line: string) => void;
}): Promise<PepCluster> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: workerEntry(), args: [] });
  const live = new Map<number, Worker>();
  const listening = new Set<Worker>();
  let closing = false;
  const restarts: number[] = [];
  let nextMetricsId = 1;
  const pendingMetrics = new Map<number, (data: unknown) => void>();

  const fork = (index: number): Promise<AddressInfo> => {
    const spec: PepWorkerSpec = {
      configPath: o.configPath,
      index,
      ...(o.routeTargets ? { routeTargets: o.routeTargets } : {}),
    };
    const w = cluster.fork({ ZT_PEP_WORKER: JSON.stringify(spec) });
    live.set(index, w);
    w.on("message", (m: WorkerMessage) => {
      if (m.zt === "metrics") {
        pendingMetrics.get(m.id)?.(m.data);
      }
    });
    return new Promise<AddressInfo>((resolve, reject) => {
      const timer = setTimeout(() => {
        w.kill();
        reject(new ZtError("ZT_INTERNAL", `PEP worker ${index} did not start listening`));
      }, READY_TIMEOUT_MS);
      const onMessage = (m: WorkerMessage) => {
        if (m.zt === "listening") {
          listening.add(w);
          clearTimeout(timer);
          w.off("message", onMessage);
          resolve(m.address);
        } else if (m.zt === "failed") {
          clearTimeout(timer);
          const code = (m.code in ERROR_TABLE ? m.code : "ZT_INTERNAL") as ZtErrorCode;
          reject(new ZtError(code, `PEP worker ${index}: ${m.message}`));
        }
      };
      w.on("message", onMessage);
      w.once("exit", (code, signal) => {
        clearTimeout(timer);
        listening.delete(w);
        if (live.get(index) === w) live.delete(index);
        reject(
          new ZtError(
            "ZT_INTERNAL",
            `PEP worker ${index} exited (${signal ?? `code ${code}`}) before listening`,
          ),
        );
        if (closing) return;
        // A worker that dies later is replaced; when they keep dying, at most
        // MAX_RESTARTS_PER_MINUTE times a minute (never giving up on the slot: the cause,
        // e.g. a policy file that does not load, may be fixed meanwhile).
        const now = Date.now();
        while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
        if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
          const wait = restarts[0]! + 60_000 - now;
          o.out(
            `zt: PEP worker ${index} exited; too many restarts, trying again in ${Math.ceil(wait / 1000)} s`,
          );
          setTimeout(() => {
            if (!closing) fork(index).catch((e: Error) => o.out(`zt: ${e.message}`));
          }, wait).unref();
          return;
        }
        restarts.push(now);
        o.out(`zt: PEP worker ${index} exited (${signal ?? `code ${code}`}); starting a new one`);
        setTimeout(() => {
          if (!closing) fork(index).catch((e: Error) => o.out(`zt: ${e.message}`));
        }, 500).unref();
      });
    });
  };

  let addresses: AddressInfo[];
  try {
    addresses = await Promise.all(Array.from({ length: o.workers }, (_, i) => fork(i + 1)));
  } catch (e) {
    closing = true;
    for (const w of live.values()) w.kill();
    throw e;
  }
  const post = (w: Worker, m: PrimaryMessage) => {
    if (w.isConnected()) w.send(m);
  };
  return {
    address: addresses[0]!,
    size: o.workers,
    listening: () => listening.size,
    reloadPolicies() {
      for (const w of live.values()) post(w, { zt: "reload" });
    },
    async workerMetrics() {
      const asks = [...live.values()].map(
        (w) =>
          new Promise<unknown>((resolve) => {
            const id = nextMetricsId++;
            const timer = setTimeout(() => {
              pendingMetrics.delete(id);
              resolve([]);
            }, 2_000);
            pendingMetrics.set(id, (data) => {
              clearTimeout(timer);
              pendingMetrics.delete(id);
              resolve(data);
            });
            post(w, { zt: "metrics?", id });
          }),
      );
      return Promise.all(asks);
    },
    async close() {
      closing = true;
      await Promise.all(
        [...live.values()].map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              const force = setTimeout(() => w.kill("SIGKILL"), 8_000);
              w.once("exit", () => {
                clearTimeout(force);
                resolve();
              });
              post(w, { zt: "shutdown" });
            }),
        ),
      );
      live.clear();
    },
  };
}
