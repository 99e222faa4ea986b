import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, resolve, isAbsolute } from "node:path";
import { parseDocument, parse as parseYaml } from "yaml";
import type { z } from "zod";
import { isZtError, ZtError } from "../core/errors.js";
import { readInputFile } from "../core/read-input-file.js";
import { parseDuration } from "../core/duration.js";
// Pure and import-free: the one definition of a canonical path, shared with the PEP.
import { canonicalHostUncached, canonicalPath } from "../proxy/canonical-request.js";
import { parseOrigin, serializeOrigin } from "../proxy/same-origin.js";
import { configSchema, type RawConfig, type RouteConfig } from "./schema.js";

/** A validated configuration with paths resolved against the config file's folder. */
export interface ZtConfig extends Omit<RawConfig, "routes"> {
  /** Absolute path of the file this came from (or the folder for a synthetic config). */
  configPath: string;
  configDir: string;
  routes: ResolvedRoute[];
  sessionTtlMs: number;
  sessionIdleMs: number;
  sessionRecheckMs: number;
  maxStalenessMs: number;
  /** `events.retention` (ms): older events are pruned. */
  eventRetentionMs: number;
}

export interface ResolvedRoute extends RouteConfig {
  /** Lowercase host of `from`, without a trailing dot. */
  host: string;
  /** Port of `from` (explicit or the scheme default). */
  port: number;
  /**
   * Path prefix of `from` in canonical form (as `canonicalPath` makes request paths),
   * without a trailing slash: "/" or "/x".
   */
  pathPrefix: string;
  timeoutMs: number;
  /** The certificates of `upstream_ca` (absolute path), read and checked at load. */
  upstreamCaPem?: string;
}

export interface LoadConfigOptions {
  /** Environment for ZT_… overrides (defaults to none, so tests stay hermetic). */
  env?: Record<string, string | undefined>;
}

/** Where the config file is: --config, then ZT_CONFIG, then ./zt.yaml. */
export function configPathFrom(
  flag: string | undefined,
  env: Record<string, string | undefined>,
): string {
  return resolve(flag ?? env["ZT_CONFIG"] ?? "zt.yaml");
}

/**
 * Loads and validates zt.yaml. Every problem names the key path and what was
 * expected; nothing is partially applied.
 */
export function loadConfig(path: string, options: LoadConfigOptions = {}): ZtConfig {
  if (!existsSync(path)) {
    throw new ZtError(
      "ZT_CONFIG_NOT_FOUND",
      `config file ${path} not found (use --config FILE or ZT_CONFIG)`,
      {
        path,
      },
    );
  }
  let text: string;
  try {
    text = readInputFile(path);
  } catch (e) {
    if (isZtError(e)) throw new ZtError("ZT_CONFIG_INVALID", `config file ${e.message}`, { path });
    const code = (e as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ZtError("ZT_CONFIG_INVALID", `cannot read config file ${path} (${code})`, { path });
  }
  return parseConfigText(text, path, options);
}

export function parseConfigText(
  text: string,
  path: string,
  options: LoadConfigOptions = {},
): ZtConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  // An unknown tag (`!vault …`) would be dropped and its text used as the value.
  const problems = [...doc.errors, ...doc.warnings.filter((w) => w.code === "TAG_RESOLVE_FAILED")];
  if (problems.length > 0) {
    const e = problems[0]!;
    const line = e.linePos?.[0];
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${path}${line ? `:${line.line}:${line.col}` : ""}: invalid YAML: ${e.message.split("\n")[0]}`,
      { path },
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS() ?? {};
  } catch (e) {
    // yaml refuses aliases that expand past its limit (a "billion laughs" file).
    throw new ZtError("ZT_CONFIG_INVALID", `${path}: invalid YAML: ${(e as Error).message}`, {
      path,
    });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${path}: expected a mapping of settings at the top level`,
      { path },
    );
  }
  const fromEnv = new Map<string, string>();
  raw = applyEnvOverrides(raw as Record<string, unknown>, options.env ?? {}, fromEnv);
  try {
    return validateConfig(raw, path);
  } catch (e) {
    throw withEnvSource(e, fromEnv);
  }
}

/** Validates an already-parsed object (e.g. built by the demo) as a config. */
export function validateConfig(raw: unknown, path: string): ZtConfig {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    throw new ZtError("ZT_CONFIG_INVALID", `${path}: ${formatIssues(result.error.issues)}`, {
      path,
      issues: result.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message })),
    });
  }
  return resolveConfig(result.data, path);
}

/**
 * A refused value that came from a ZT_… variable, not from the file: say so, or the
 * operator looks for it in zt.yaml. `fromEnv` maps a key path (`listen.api`) to the
 * variable that set it.
 */
function withEnvSource(e: unknown, fromEnv: Map<string, string>): unknown {
  if (!(e instanceof ZtError) || e.code !== "ZT_CONFIG_INVALID" || fromEnv.size === 0) return e;
  const issues = e.context["issues"];
  const keys = Array.isArray(issues)
    ? issues.map((i) => String((i as { path: unknown }).path))
    : typeof e.context["key"] === "string"
      ? [e.context["key"]]
      : [];
  const vars = new Set<string>();
  for (const k of keys)
    for (const [envKey, name] of fromEnv)
      if (k === envKey || k.startsWith(`${envKey}.`) || k.startsWith(`${envKey}[`)) vars.add(name);
  if (vars.size === 0) return e;
  return new ZtError(
    "ZT_CONFIG_INVALID",
    `${e.message} (set by ${[...vars].join(", ")})`,
    e.context,
    { cause: e },
  );
}

function formatPath(p: readonly PropertyKey[]): string {
  let out = "";
  for (const k of p) out += typeof k === "number" ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out || "(top level)";
}

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      if (i.code === "unrecognized_keys") {
        const where = i.path.length ? `${formatPath(i.path)}: ` : "";
        // Only keys that look like setting names, and a few: a file that is not a config
        // at all (--config /etc/shadow) would otherwise be echoed, and its lines can be secrets.
        const names = i.keys.filter((k) => /^[A-Za-z0-9_-]{1,64}$/.test(k));
        const others = i.keys.length - names.length;
        const parts = names.slice(0, 5).map((k) => JSON.stringify(k));
        if (names.length > 5) parts.push(`${names.length - 5} more`);
        if (others > 0) parts.push(`${others} that are not setting names (not a zt config?)`);
        return `${where}unknown key(s) ${parts.join(", ")}`;
      }
      return `${formatPath(i.path)}: ${i.message}`;
    })
    .join("; ");
}

/** ZT_DATA_DIR → data_dir, ZT_LISTEN__PROXY → listen.proxy; values parsed as YAML scalars. */
function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: Record<string, string | undefined>,
  fromEnv: Map<string, string>,
): Record<string, unknown> {
  const out = structuredClone(raw);
  const topKeys = new Set(Object.keys(configSchema.shape));
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("ZT_") || value === undefined) continue;
    const keyPath = name.slice(3).toLowerCase().split("__");
    if (!topKeys.has(keyPath[0]!)) {
      // ZT_MASTER_KEY, ZT_SESSION_TOKEN … are not settings; but a name with "__" can only
      // mean one, and a mistyped section (ZT_SESION__TTL) would be dropped without a word.
      if (keyPath.length > 1)
        throw new ZtError(
          "ZT_CONFIG_INVALID",
          `${name}: no setting ${JSON.stringify(keyPath[0])} to override (ZT_<SETTING>__<KEY>, as in ZT_SESSION__TTL)`,
          { env: name },
        );
      continue;
    }
    let target: Record<string, unknown> = out;
    for (const k of keyPath.slice(0, -1)) {
      const next = target[k];
      if (typeof next !== "object" || next === null || Array.isArray(next)) target[k] = {};
      target = target[k] as Record<string, unknown>;
    }
    let parsed: unknown = value;
    try {
      parsed = parseYaml(value);
    } catch {
      parsed = value;
    }
    target[keyPath[keyPath.length - 1]!] = parsed;
    fromEnv.set(keyPath.join("."), name);
  }
  return out;
}

function resolveConfig(c: RawConfig, path: string): ZtConfig {
  const configDir = dirname(path);
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(configDir, p));
  /**
   * A duration above 0 (0 would switch a timeout off, or end every session at once;
   * `zero`: 0 allowed, where it means "at once"); `timer`: also at most 24d, since a Node
   * timer past 2^31−1 ms fires after 1 ms.
   */
  const durations = (v: string | number, key: string, timer = false, zero = false) => {
    let ms: number;
    try {
      ms = parseDuration(v, key);
    } catch (e) {
      throw new ZtError("ZT_CONFIG_INVALID", `${path}: ${(e as Error).message}`, { path, key });
    }
    const refuse = (why: string) =>
      new ZtError("ZT_CONFIG_INVALID", `${path}: ${key}: ${why}, got ${JSON.stringify(v)}`, {
        path,
        key,
      });
    if (!Number.isSafeInteger(ms)) throw refuse("expected a duration such as 30s, 15m or 12h");
    if (ms < 0 || (ms === 0 && !zero)) throw refuse("expected a duration above 0");
    if (timer && ms > MAX_TIMER_DURATION_MS) throw refuse("expected a duration of at most 24d");
    return ms;
  };
  const names = new Set<string>();
  const routes: ResolvedRoute[] = c.routes.map((r, i) => {
    if (names.has(r.name)) {
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${path}: routes[${i}].name: duplicate route name "${r.name}"`,
        {
          path,
        },
      );
    }
    names.add(r.name);
    const from = new URL(r.from);
    if (from.search || from.hash || from.username || from.password) {
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${path}: routes[${i}].from: expected scheme://host[:port][/prefix] without query, fragment or credentials`,
        { path },
      );
    }
    const prefix = routePrefix(from.pathname);
    if (!prefix.ok) {
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${path}: routes[${i}].from: route "${r.name}": path prefix ${JSON.stringify(from.pathname)} is refused as a request path would be (${prefix.detail})`,
        { path, route: r.name, key: `routes[${i}].from` },
      );
    }
    const host = from.hostname.toLowerCase().replace(/\.$/, "");
    const hostCheck = canonicalHostUncached(host);
    if (!hostCheck.ok || hostCheck.host !== host) {
      // The PEP refuses such a Host header, so the route could never match a request.
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${path}: routes[${i}].from: route "${r.name}": host ${JSON.stringify(host)} is not a DNS name or IP address, so no request could ever match it`,
        { path, route: r.name, key: `routes[${i}].from` },
      );
    }
    const resolved: ResolvedRoute = {
      ...r,
      host,
      port: from.port ? Number(from.port) : from.protocol === "https:" ? 443 : 80,
      pathPrefix: prefix.prefix,
      timeoutMs: durations(r.timeout, `routes[${i}].timeout`, true),
    };
    if (r.websocket_origins !== undefined)
      resolved.websocket_origins = r.websocket_origins.map((o, j) =>
        websocketOrigin(o, path, r.name, `routes[${i}].websocket_origins[${j}]`),
      );
    if (r.upstream_ca !== undefined) {
      const key = `routes[${i}].upstream_ca`;
      if (new URL(r.to).protocol !== "https:")
        throw new ZtError(
          "ZT_CONFIG_INVALID",
          `${path}: ${key}: route "${r.name}" reaches its upstream over http (${r.to}); a CA file verifies https upstreams only`,
          { path, route: r.name, key },
        );
      resolved.upstream_ca = abs(r.upstream_ca);
      resolved.upstreamCaPem = readCaFile(resolved.upstream_ca, `${path}: ${key}`, {
        path,
        route: r.name,
        key,
      });
    }
    return resolved;
  });
  // zt matches a request to a route by host and path, not by port or scheme: two routes
  // differing only in those would be one route to zt, while a front proxy (each on its
  // own listener) would send the requests to two apps.
  const seen = new Map<string, string>();
  for (const r of routes) {
    const key = `${r.host} ${r.pathPrefix}`;
    const other = seen.get(key);
    if (other !== undefined)
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${path}: routes "${other}" and "${r.name}" have the same host and path prefix (${r.host}${r.pathPrefix === "/" ? "" : r.pathPrefix}); zt tells routes apart by host and path, not by port or scheme`,
        { path, route: r.name },
      );
    seen.set(key, r.name);
  }
  const cfg: ZtConfig = {
    ...c,
    configPath: path,
    configDir,
    data_dir: abs(c.data_dir),
    policies: abs(c.policies),
    policy_tests: c.policy_tests.map(abs),
    routes,
    sessionTtlMs: durations(c.session.ttl, "session.ttl"),
    sessionIdleMs: durations(c.session.idle_timeout, "session.idle_timeout"),
    sessionRecheckMs: durations(c.session.recheck_interval, "session.recheck_interval", true),
    maxStalenessMs: durations(c.max_staleness, "max_staleness"),
    eventRetentionMs: durations(c.events.retention, "events.retention"),
  };
  // Below max_staleness, a process briefly cut off (and still deciding) would routinely
  // lose its place in the event log and have to re-read everything.
  if (cfg.eventRetentionMs < cfg.maxStalenessMs)
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${path}: events.retention: expected at least max_staleness (${JSON.stringify(c.max_staleness)}), got ${JSON.stringify(c.events.retention)}`,
      { path, key: "events.retention" },
    );
  // Parsed again by the PEP; checked here so a bad value names its key and zt does not start.
  const headerMs = durations(c.limits.header_timeout, "limits.header_timeout", true);
  const requestMs = durations(c.limits.request_timeout, "limits.request_timeout", true);
  if (headerMs > requestMs)
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${path}: limits.header_timeout: expected at most limits.request_timeout (${JSON.stringify(c.limits.request_timeout)}), got ${JSON.stringify(c.limits.header_timeout)}`,
      { path, key: "limits.header_timeout" },
    );
  durations(c.limits.reload_grace, "limits.reload_grace", true, true);
  if (c.master_key_file !== undefined) cfg.master_key_file = abs(c.master_key_file);
  if (c.tls) {
    const tls = { ...c.tls };
    if (tls.cert !== undefined) tls.cert = abs(tls.cert);
    if (tls.key !== undefined) tls.key = abs(tls.key);
    cfg.tls = tls;
  }
  return cfg;
}

/** 24 days: below the 2^31−1 ms a Node timer holds. */
const MAX_TIMER_DURATION_MS = 24 * 86_400_000;

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g;

/**
 * One entry of `routes[].websocket_origins`: a serialised http(s) origin, as a browser
 * sends it in `Origin`, returned in the one spelling the PEP compares
 * (`serializeOrigin`: lowercase, the default port left out).
 */
function websocketOrigin(value: string, path: string, route: string, key: string): string {
  const o = parseOrigin(value);
  if (o !== undefined) return serializeOrigin(o);
  const why =
    value.trim().toLowerCase() === "null"
      ? "the null origin is refused: any page can send it (sandboxed frames, file: pages)"
      : "expected an origin scheme://host[:port] (http or https; no path, not even /, no query, credentials or wildcard)";
  throw new ZtError(
    "ZT_CONFIG_INVALID",
    `${path}: ${key}: route "${route}": ${why}, got ${JSON.stringify(value.slice(0, 200))}`,
    { path, route, key },
  );
}

/**
 * Reads a PEM file of CA certificates (`routes[].upstream_ca`): every block must be a
 * certificate that parses and is a CA (or self-signed: a pinned certificate), and there
 * must be at least one. A private key anywhere in it is refused: the file is handed to
 * front proxies too, and trust anchors are not secrets.
 */
function readCaFile(file: string, where: string, details: Record<string, unknown>): string {
  const refuse = (why: string) =>
    new ZtError("ZT_CONFIG_INVALID", `${where}: ${why}`, { ...details, file });
  let text: string;
  try {
    text = readInputFile(file);
  } catch (e) {
    if (isZtError(e)) throw refuse(e.message);
    throw refuse(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  // On the raw text, not only well-formed blocks: OpenSSL reads a key whose BEGIN line
  // this file's block pattern would not match (trailing blanks, odd line ends).
  if (/-----BEGIN [A-Z0-9 ]*PRIVATE KEY/.test(text))
    throw refuse(`${file} contains a private key; give a file of CA certificates only`);
  const certs: string[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const label = m[1]!;
    if (label !== "CERTIFICATE")
      throw refuse(
        `${file} holds a ${label} block; expected CA certificates only (-----BEGIN CERTIFICATE-----)`,
      );
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(m[0]);
    } catch {
      throw refuse(`certificate ${certs.length + 1} in ${file} does not parse`);
    }
    // Node verifies only up to a trust anchor it can end a chain at: a CA, or a
    // self-signed certificate. A server's own CA-issued certificate never verifies.
    if (!cert.ca && !cert.checkIssued(cert))
      throw refuse(
        `certificate ${certs.length + 1} in ${file} (${cert.subject.replaceAll("\n", ", ")}) is not a CA certificate; give the CA that issued it`,
      );
    certs.push(m[0]);
  }
  if (certs.length === 0)
    throw refuse(`${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return certs.join("\n") + "\n";
}

/**
 * A route's path prefix in the form the PEP matches: the canonical path (as
 * `canonicalPath` makes every request path) without a trailing slash. Otherwise a prefix
 * spelt differently from its canonical form (`/api[v2]`, `/caf%c3%a9`) would never match,
 * and its requests would fall through to a shorter prefix with another route's policy.
 */
function routePrefix(
  pathname: string,
): { ok: true; prefix: string } | { ok: false; detail: string } {
  const c = canonicalPath(pathname);
  if (!c.ok) return { ok: false, detail: c.detail };
  return { ok: true, prefix: c.path.replace(/\/+$/, "") || "/" };
}
