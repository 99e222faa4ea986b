import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import type pg from "pg";
import { ZtError } from "../core/errors.js";

/**
 * A parsed `database_url`. `location` names the server and database for messages and
 * `zt db status`; it never carries the user's password.
 */
export interface PostgresTarget {
  /** `host:port/database` — safe to print. */
  location: string;
  host: string;
  port: number;
  database: string;
  user: string;
  /** Everything the pool needs; holds the password, so never log it. */
  poolConfig: pg.PoolConfig;
  /** `disable` | `require` | `verify-ca` | `verify-full` */
  sslmode: SslMode;
}

export type SslMode = "disable" | "require" | "verify-ca" | "verify-full";

export interface DatabaseUrlOverrides {
  poolSize?: number | undefined;
  statementTimeoutMs?: number | undefined;
}

export const DEFAULT_POOL_MAX = 10;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 10_000;
export const DEFAULT_CONNECT_TIMEOUT_S = 5;

/** Query parameters zt understands; any other one is refused so a typo is an error. */
const KNOWN_PARAMS = new Set([
  "sslmode",
  "sslrootcert",
  "sslcert",
  "sslkey",
  "host",
  "application_name",
  "connect_timeout",
  "pool_max",
  "statement_timeout",
]);

/** True when the value selects PostgreSQL rather than the embedded SQLite store. */
export function isPostgresUrl(url: string | undefined): url is string {
  return url !== undefined && /^postgres(ql)?:\/\//i.test(url.trim());
}

/**
 * Parses `postgres://user:password@host:port/db?sslmode=verify-full&pool_max=20`.
 * TLS follows libpq's `sslmode` meanings (`require` encrypts without verifying the
 * server unless `sslrootcert` is given; `verify-full` checks the chain and host name);
 * `prefer` / `allow` are refused because they silently fall back to plaintext.
 * Errors name the parameter, never echo the URL (it may hold a password).
 */
export function parseDatabaseUrl(
  raw: string,
  overrides: DatabaseUrlOverrides = {},
): PostgresTarget {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw invalid("expected postgres://user[:password]@host[:port]/database[?sslmode=…]");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw invalid(
      `expected a postgres:// or postgresql:// URL, got scheme "${url.protocol.replace(/:$/, "")}"`,
    );
  }
  const params = url.searchParams;
  for (const name of params.keys()) {
    if (!KNOWN_PARAMS.has(name)) {
      throw invalid(`unknown parameter "${name}" (known: ${[...KNOWN_PARAMS].join(", ")})`);
    }
  }
  const host = params.get("host") ?? decodeURIComponent(url.hostname.replace(/^\[(.*)\]$/, "$1"));
  if (!host) throw invalid("missing host");
  const port = url.port ? Number(url.port) : 5432;
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!database) throw invalid("missing database name (postgres://host/DATABASE)");
  const user = decodeURIComponent(url.username) || "postgres";
  const password = url.password ? decodeURIComponent(url.password) : undefined;

  const poolMax = intParam(params, "pool_max", 1, 1000) ?? overrides.poolSize ?? DEFAULT_POOL_MAX;
  const statementTimeout =
    intParam(params, "statement_timeout", 0, 86_400_000) ??
    overrides.statementTimeoutMs ??
    DEFAULT_STATEMENT_TIMEOUT_MS;
  const connectTimeoutS = intParam(params, "connect_timeout", 1, 3600) ?? DEFAULT_CONNECT_TIMEOUT_S;
  const sslmode = parseSslMode(params.get("sslmode"));
  const ssl = tlsOptions(sslmode, params, host);

  const poolConfig: pg.PoolConfig = {
    host,
    port,
    database,
    user,
    max: poolMax,
    application_name: params.get("application_name") ?? "zt",
    connectionTimeoutMillis: connectTimeoutS * 1000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    // A transaction left open by a stuck client must not hold locks for ever.
    idle_in_transaction_session_timeout: 60_000,
    ssl,
  };
  if (statementTimeout > 0) {
    poolConfig.statement_timeout = statementTimeout;
    // Client-side guard for a network that silently drops packets: the server's
    // statement_timeout cannot fire if its reply never arrives.
    poolConfig.query_timeout = statementTimeout + 5_000;
  }
  if (password !== undefined) poolConfig.password = password;
  const hostForDisplay = host.includes(":") && !host.startsWith("/") ? `[${host}]` : host;
  return {
    location: `${hostForDisplay}:${port}/${database}`,
    host,
    port,
    database,
    user,
    poolConfig,
    sslmode,
  };
}

/** The URL with the password replaced, for display. */
export function redactDatabaseUrl(raw: string): string {
  try {
    const url = new URL(raw.trim());
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "(invalid database_url)";
  }
}

function parseSslMode(value: string | null): SslMode {
  switch (value) {
    case null:
    case "disable":
      return "disable";
    case "require":
    case "verify-ca":
    case "verify-full":
      return value;
    case "prefer":
    case "allow":
      throw invalid(
        `sslmode=${value} is not supported: it falls back to plaintext silently; use disable, require, verify-ca or verify-full`,
      );
    default:
      throw invalid(`sslmode: expected disable, require, verify-ca or verify-full, got "${value}"`);
  }
}

function tlsOptions(
  mode: SslMode,
  params: URLSearchParams,
  host: string,
): false | ConnectionOptions {
  if (mode === "disable") {
    for (const p of ["sslrootcert", "sslcert", "sslkey"]) {
      if (params.has(p))
        throw invalid(`${p} is set but sslmode is disable (set sslmode=verify-full)`);
    }
    return false;
  }
  const tls: ConnectionOptions = {};
  const rootCert = params.get("sslrootcert");
  if (rootCert) tls.ca = readPem(rootCert, "sslrootcert");
  const cert = params.get("sslcert");
  const key = params.get("sslkey");
  if ((cert === null) !== (key === null))
    throw invalid("sslcert and sslkey must be given together");
  if (cert && key) {
    tls.cert = readPem(cert, "sslcert");
    tls.key = readPem(key, "sslkey");
  }
  if (!/^[0-9.]+$|:/.test(host) && !host.startsWith("/")) tls.servername = host;
  switch (mode) {
    case "require":
      // libpq: encrypt only, unless a root certificate is given (then as verify-ca).
      if (rootCert) tls.checkServerIdentity = () => undefined;
      else tls.rejectUnauthorized = false;
      break;
    case "verify-ca":
      if (!rootCert) throw invalid("sslmode=verify-ca needs sslrootcert=/path/to/ca.pem");
      tls.checkServerIdentity = () => undefined;
      break;
    case "verify-full":
      tls.rejectUnauthorized = true;
      break;
  }
  return tls;
}

function readPem(path: string, param: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw invalid(
      `${param}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

function intParam(
  params: URLSearchParams,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const v = params.get(name);
  if (v === null) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw invalid(`${name}: expected an integer from ${min} to ${max}, got "${v}"`);
  }
  return Number(v);
}

function invalid(message: string): ZtError {
  return new ZtError("ZT_CONFIG_INVALID", `database_url: ${message}`, { key: "database_url" });
}
