/**
 * `listen.proxy_workers` > 1: the PEP runs in N worker processes (node:cluster) that
 * share the listening socket (the kernel spreads connections: SCHED_NONE, no hop
 * through the primary) and nothing else but the store. The primary starts them after
 * it has initialised the store and the PKI, hands each the config it runs, waits until
 * every one listens, replaces a worker that dies, and stops them on close.
 */
import cluster, { type Worker } from "node:cluster";
import { existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ZtConfig } from "../config/index.js";
import { ERROR_TABLE, ZtError, type ZtErrorCode } from "../core/errors.js";
import type {
  PepWorkerSpec,
  PepWorkerStatus,
  PrimaryMessage,
  WorkerMessage,
} from "./pep-worker.js";
import {
  clusterReadiness,
  type ClusterReadiness,
  type WorkerSlotReport,
} from "./pep-cluster-readiness.js";

export interface PepCluster {
  readonly address: AddressInfo;
  readonly size: number;
  /** How many workers listen now (a dead one and its replacement until it listens do not). */
  listening(): number;
  /**
   * Asks every worker to reload (SIGHUP on the primary): to run `config` (the primary's
   * config after its reload) and reload its policy set. Counted: a worker still starting
   * gets the reload once it listens, and a worker started later runs `config`.
   */
  reload(config: ZtConfig): void;
  /** Each live worker's metrics registry as JSON (prom-client), for aggregation. */
  workerMetrics(): Promise<unknown[]>;
  /**
   * Asks every listening worker for its state (policy and config versions and errors,
   * reload generation, store contact) and compares it with the primary's versions.
   */
  readiness(primary: { policyVersion: string; configVersion: string }): Promise<ClusterReadiness>;
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
/** How long /readyz waits for a worker's answer before reporting it not ready. */
const STATUS_TIMEOUT_MS = 1_000;

interface Slot {
  worker: Worker;
  state: "starting" | "listening";
}

export async function startPepCluster(o: {
  workers: number;
  /**
   * The config the primary runs: every worker runs this one, restarted ones included
   * (until a reload hands over the next one).
   */
  config: ZtConfig;
  out: (line: string) => void;
}): Promise<PepCluster> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: workerEntry(), args: [] });
  const slots = new Map<number, Slot>();
  /** Why each slot's last worker failed, while no worker of that slot listens. */
  const failures = new Map<number, string>();
  /** Since when (wall clock) each worker has been seen on another policy set than the primary. */
  const skewSince = new Map<number, { version: string; since: number }>();
  let closing = false;
  /** Reloads asked so far (SIGHUP): a worker reporting fewer is sent the reload. */
  let generation = 0;
  /** The config a worker is handed: the primary's, as of its last reload. */
  let config = o.config;
  const restarts: number[] = [];
  let nextId = 1;
  const pending = new Map<number, (m: WorkerMessage) => void>();
  const post = (w: Worker, m: PrimaryMessage) => {
    if (w.isConnected()) w.send(m);
  };
  const listeningWorkers = () =>
    [...slots.entries()].filter(([, s]) => s.state === "listening" && !s.worker.isDead());

  /** Sends a question to a worker; its answer, or undefined after `ms`. */
  const ask = <T extends WorkerMessage>(
    w: Worker,
    question: (id: number) => PrimaryMessage,
    ms: number,
  ): Promise<T | undefined> =>
    new Promise((resolve) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        resolve(undefined);
      }, ms);
      pending.set(id, (m) => {
        clearTimeout(timer);
        pending.delete(id);
        resolve(m as T);
      });
      post(w, question(id));
    });

  const fork = (index: number): Promise<AddressInfo> => {
    const spec: PepWorkerSpec = { index };
    const w = cluster.fork({ ZT_PEP_WORKER: JSON.stringify(spec) });
    const slot: Slot = { worker: w, state: "starting" };
    slots.set(index, slot);
    w.on("message", (m: WorkerMessage) => {
      if (m.zt === "config?") {
        // The primary's config, not zt.yaml as it is on disk now: an edit made since
        // zt started would otherwise run in restarted workers only.
        post(w, { zt: "config", config, generation });
      } else if (m.zt === "metrics" || m.zt === "status") {
        pending.get(m.id)?.(m);
      }
    });
    let failed: string | undefined;
    return new Promise<AddressInfo>((resolve, reject) => {
      const timer = setTimeout(() => {
        w.kill();
        reject(new ZtError("ZT_INTERNAL", `PEP worker ${index} did not start listening`));
      }, READY_TIMEOUT_MS);
      const onMessage = (m: WorkerMessage) => {
        if (m.zt === "listening") {
          slot.state = "listening";
          failures.delete(index);
          clearTimeout(timer);
          w.off("message", onMessage);
          // A reload asked while it started (after it read its policy set, or before it
          // could hear it) would be lost: send it now.
          if (m.generation < generation) post(w, { zt: "reload", generation, config });
          resolve(m.address);
        } else if (m.zt === "failed") {
          clearTimeout(timer);
          failed = `${m.code}: ${m.message}`;
          const code = (m.code in ERROR_TABLE ? m.code : "ZT_INTERNAL") as ZtErrorCode;
          reject(new ZtError(code, `PEP worker ${index}: ${m.message}`));
        }
      };
      w.on("message", onMessage);
      w.once("exit", (code, signal) => {
        clearTimeout(timer);
        const how = signal ?? `code ${code}`;
        failures.set(index, failed ?? `exited (${how})`);
        if (slots.get(index) === slot) slots.delete(index);
        reject(new ZtError("ZT_INTERNAL", `PEP worker ${index} exited (${how}) before listening`));
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
        o.out(`zt: PEP worker ${index} exited (${how}); starting a new one`);
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
    for (const s of slots.values()) s.worker.kill();
    throw e;
  }
  return {
    address: addresses[0]!,
    size: o.workers,
    listening: () => listeningWorkers().length,
    reload(next) {
      config = next;
      generation++;
      // Starting workers are not sent it: they may not hear it yet, and get it when
      // they report listening with an older generation.
      for (const [, s] of listeningWorkers()) post(s.worker, { zt: "reload", generation, config });
    },
    async workerMetrics() {
      const asks = [...slots.values()].map(async (s) => {
        const m = await ask<Extract<WorkerMessage, { zt: "metrics" }>>(
          s.worker,
          (id) => ({ zt: "metrics?", id }),
          2_000,
        );
        return m ? m.data : [];
      });
      return Promise.all(asks);
    },
    async readiness(primary) {
      const primaryPolicyVersion = primary.policyVersion;
      const reports = await Promise.all(
        Array.from({ length: o.workers }, async (_, i): Promise<WorkerSlotReport> => {
          const index = i + 1;
          const s = slots.get(index);
          const lastError = failures.get(index);
          if (!s || s.state !== "listening" || s.worker.isDead())
            return {
              worker: index,
              state: s ? "starting" : "down",
              ...(lastError ? { last_error: lastError } : {}),
            };
          const m = await ask<Extract<WorkerMessage, { zt: "status" }>>(
            s.worker,
            (id) => ({ zt: "status?", id }),
            STATUS_TIMEOUT_MS,
          );
          const status: PepWorkerStatus | undefined = m?.status;
          return { worker: index, state: "listening", ...(status ? { status } : {}) };
        }),
      );
      const now = Date.now();
      for (const r of reports) {
        const v = r.status?.policy_version;
        if (v === undefined || v === primaryPolicyVersion) skewSince.delete(r.worker);
        else if (skewSince.get(r.worker)?.version !== v)
          skewSince.set(r.worker, { version: v, since: now });
      }
      return clusterReadiness({
        primaryPolicyVersion,
        primaryConfigVersion: primary.configVersion,
        generation,
        reports,
        policySkewMs: (w) => now - (skewSince.get(w)?.since ?? now),
      });
    },
    async close() {
      closing = true;
      await Promise.all(
        [...slots.values()].map(
          ({ worker: w }) =>
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
      slots.clear();
    },
  };
}
