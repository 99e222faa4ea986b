/**
 * What a reload of zt.yaml (SIGHUP) changes in a running zt. Pure: the config in force
 * and the one just read in, a plan out.
 */
import { createHash } from "node:crypto";
import type { ZtConfig } from "./load-config.js";

/**
 * The keys a running zt applies on reload: the PEP reads them per request (the routes,
 * their upstreams and options; who is a trusted proxy; the body limit; the forward-auth
 * header convention; how long exchanges on a changed route may run on), and the API reads
 * its trusted proxies per request. Every other key takes effect at the next restart.
 */
export const RELOADABLE_KEYS = [
  "routes",
  "trusted_proxies",
  "limits.max_body_bytes",
  "limits.reload_grace",
  "forward_auth.headers",
  "api.trusted_proxies",
] as const;

/** Fields computed from other keys: a change shows under the key they come from. */
const DERIVED = new Set([
  "configPath",
  "configDir",
  "sessionTtlMs",
  "sessionIdleMs",
  "sessionRecheckMs",
  "maxStalenessMs",
  "eventRetentionMs",
]);

export interface ConfigReloadPlan {
  /**
   * The config in force after the reload: the current one with the new one's reloadable
   * keys. A route that did not change keeps its object (its upstream pool goes with it).
   */
  config: ZtConfig;
  /** Reloadable keys whose value changed: applied. */
  applied: string[];
  /** Route names, by what the reload does to them. */
  routes: { added: string[]; removed: string[]; changed: string[] };
  /** Keys whose value changed but that only a restart applies: not applied. */
  restartRequired: string[];
}

/**
 * Compares the config in force with one just read and validated (`loadConfig`): which
 * reloadable keys to apply, which routes are added, removed or changed, and which keys
 * changed that need a restart.
 *
 * @example
 *   const plan = planConfigReload(ctx.config, loadConfig(path));
 *   // plan.routes.added: ["grafana"]; plan.restartRequired: ["listen.proxy"]
 */
export function planConfigReload(current: ZtConfig, next: ZtConfig): ConfigReloadPlan {
  const changed = changedKeys(current, next, "");
  const isReloadable = (k: string) => RELOADABLE_KEYS.some((r) => k === r || k.startsWith(`${r}.`));
  const before = new Map(current.routes.map((r) => [r.name, r]));
  const after = new Set(next.routes.map((r) => r.name));
  const routes: ConfigReloadPlan["routes"] = { added: [], removed: [], changed: [] };
  const keptRoutes = next.routes.map((r) => {
    const old = before.get(r.name);
    if (!old) routes.added.push(r.name);
    else if (sortedJson(old) !== sortedJson(r)) routes.changed.push(r.name);
    else return old;
    return r;
  });
  for (const name of before.keys()) if (!after.has(name)) routes.removed.push(name);
  let config: ZtConfig = { ...current, routes: keptRoutes };
  for (const key of RELOADABLE_KEYS)
    if (key !== "routes") config = withValueAt(config, key, valueAt(next, key));
  return {
    config,
    applied: RELOADABLE_KEYS.filter((k) => changed.some((c) => c === k)),
    routes,
    restartRequired: changed.filter((k) => !isReloadable(k)),
  };
}

/**
 * Makes `target` (the process's config object, which its parts read) hold the plan's
 * config for every reloadable key; the rest of it is left as it is.
 */
export function adoptConfigReload(target: ZtConfig, plan: ConfigReloadPlan): void {
  const t = target as unknown as Record<string, unknown>;
  const from = plan.config as unknown as Record<string, unknown>;
  for (const key of RELOADABLE_KEYS) {
    const top = key.split(".")[0]!;
    t[top] = from[top];
  }
}

/**
 * A short digest of the reloadable settings in force (`config_version` in /readyz): PEP
 * worker processes on the primary's settings report the same one.
 */
export function reloadableConfigVersion(config: ZtConfig): string {
  const values = RELOADABLE_KEYS.map((k) => valueAt(config, k));
  return createHash("sha256").update(sortedJson(values)).digest("hex").slice(0, 16);
}

/** Leaf key paths whose value differs ("listen.proxy"); arrays compare whole. */
function changedKeys(a: unknown, b: unknown, prefix: string): string[] {
  if (!isPlainObject(a) || !isPlainObject(b))
    return sortedJson(a) === sortedJson(b) ? [] : [prefix];
  const out: string[] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (prefix === "" && DERIVED.has(k)) continue;
    out.push(...changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function valueAt(config: ZtConfig, key: string): unknown {
  let v: unknown = config;
  for (const k of key.split(".")) v = isPlainObject(v) ? v[k] : undefined;
  return v;
}

/** A copy of `obj` with `value` at `key` (copied along the path, never modified). */
function withValueAt<T>(obj: T, key: string, value: unknown): T {
  const [head, ...rest] = key.split(".");
  const o = obj as Record<string, unknown>;
  return {
    ...o,
    [head!]: rest.length === 0 ? value : withValueAt(o[head!] ?? {}, rest.join("."), value),
  } as T;
}

/**
 * JSON with object keys sorted and undefined members left out: equal for equal
 * settings, whatever the key order, and the same after the IPC channel's JSON.
 */
function sortedJson(v: unknown): string {
  return (
    JSON.stringify(v, (_k, x: unknown) =>
      isPlainObject(x)
        ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0)))
        : x,
    ) ?? "undefined"
  );
}
