import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import type { Command } from "commander";
import { configPathFrom, loadConfig, type ZtConfig } from "../config/index.js";
import { openAppContext, type AppContext, type OpenAppContextOptions } from "../app/index.js";
import { assertMasterKeyOpensStore, masterKeyFile } from "../keys/index.js";
import { ERROR_TABLE, isZtError, ZtError, type ZtErrorCode } from "../core/errors.js";
import { printable } from "../core/printable.js";
import type { AuditInput } from "../audit/index.js";
import { beginReplaceFile, type PendingFile } from "../core/secure-files.js";

/** Global options every command sees. */
export interface GlobalOptions {
  config?: string;
  json?: boolean;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/** Loads the config named by --config / ZT_CONFIG / ./zt.yaml. */
export function loadCliConfig(cmd: Command): ZtConfig {
  const opts = globalOptions(cmd);
  return loadConfig(configPathFrom(opts.config, process.env), { env: process.env });
}

/**
 * Runs a command body with an opened AppContext and maps errors to a clear message
 * and the exit code from the error table. Never prints a stack trace.
 */
export async function withContext(
  cmd: Command,
  body: (ctx: AppContext) => Promise<number | void>,
  options: { create?: boolean } = {},
): Promise<void> {
  let ctx: AppContext | undefined;
  try {
    const config = loadCliConfig(cmd);
    // Only the commands that set a store up (`create`) may make one: any other, pointed at
    // a mistyped data_dir or database_url, would otherwise answer from a new, empty store.
    ctx = await openCliContext(config, {
      create: options.create ?? false,
      createStore: options.create ?? false,
    });
    const code = await body(ctx);
    await ctx.close();
    ctx = undefined;
    process.exitCode = code ?? 0;
  } catch (e) {
    if (ctx) await ctx.close().catch(() => undefined);
    failWith(e);
  }
}

/**
 * Opens the AppContext for a command, and refuses a master key that does not open the
 * store's sealed secrets (ZT_KEY_DECRYPT_FAILED naming ZT_MASTER_KEY or the key file)
 * before the command seals anything under it.
 */
export async function openCliContext(
  config: ZtConfig,
  options: Omit<OpenAppContextOptions, "env"> = {},
): Promise<AppContext> {
  const ctx = await openAppContext(config, { ...options, env: process.env });
  try {
    await assertMasterKeyOpensStore(
      ctx.store,
      ctx.box,
      process.env["ZT_MASTER_KEY"]
        ? "ZT_MASTER_KEY"
        : masterKeyFile({ dataDir: config.data_dir, masterKeyFile: config.master_key_file }),
    );
  } catch (e) {
    await ctx.close().catch(() => undefined);
    throw e;
  }
  return ctx;
}

/**
 * Records one audit event for a command that ran without a context (it changed the store
 * or the master key under its own hands): opens one now, records, waits for the commit.
 */
export async function auditAfter(config: ZtConfig, input: AuditInput): Promise<void> {
  const ctx = await openAppContext(config, { env: process.env, createStore: false });
  try {
    ctx.audit.record(input);
    await ctx.audit.flush();
  } finally {
    await ctx.close();
  }
}

/** Runs a command body that needs no store (pure tools: policy fmt, seg compile …). */
export async function withoutContext(body: () => Promise<number | void>): Promise<void> {
  try {
    process.exitCode = (await body()) ?? 0;
  } catch (e) {
    failWith(e);
  }
}

/**
 * Prints an error as `zt: error CODE: message` and sets the exit code from the error table.
 * The message often quotes what the user gave (`no device "…"`): control characters and
 * bidi controls in it are shown as escapes, so a value cannot drive the admin's terminal.
 */
export function failWith(e: unknown): void {
  const z = isZtError(e) ? e : userFacingError(e);
  if (z) {
    process.stderr.write(
      `zt: error ${z.code}: ${printable(z.message, { keepLineBreaks: true })}\n`,
    );
    process.exitCode = z.exitCode;
    if (z !== e && process.env["ZT_DEBUG"]) process.stderr.write(`${(e as Error)?.stack ?? ""}\n`);
    return;
  }
  const err = e as Error;
  process.stderr.write(
    `zt: error ZT_INTERNAL: ${printable(err?.message ?? String(e), { keepLineBreaks: true })}\n`,
  );
  if (process.env["ZT_DEBUG"]) process.stderr.write(`${err?.stack ?? ""}\n`);
  process.exitCode = 70;
}

/**
 * Prints `zt: warning: message` on stderr, with control and bidi characters shown as
 * escapes as in errors: warnings quote file names, model text and receivers' answers.
 */
export function warn(message: string): void {
  process.stderr.write(`zt: warning: ${printable(message, { keepLineBreaks: true })}\n`);
}

/** File errors a user causes (a wrong path, a directory, permissions), by errno code. */
const FILE_ERRORS: Record<string, { code: ZtErrorCode; what: string }> = {
  ENOENT: { code: "ZT_NOT_FOUND", what: "no such file or directory" },
  EACCES: { code: "ZT_FILE_PERMISSIONS", what: "permission denied" },
  EPERM: { code: "ZT_FILE_PERMISSIONS", what: "operation not permitted" },
  EISDIR: { code: "ZT_USAGE", what: "is a directory, expected a file" },
  ENOTDIR: { code: "ZT_USAGE", what: "a component of the path is not a directory" },
  EEXIST: { code: "ZT_USAGE", what: "already exists" },
  ELOOP: { code: "ZT_USAGE", what: "too many symbolic links" },
  ENAMETOOLONG: { code: "ZT_USAGE", what: "file name too long" },
  EROFS: { code: "ZT_FILE_PERMISSIONS", what: "read-only file system" },
  ENOSPC: { code: "ZT_UNAVAILABLE", what: "no space left on the device" },
  EDQUOT: { code: "ZT_UNAVAILABLE", what: "disk quota exceeded" },
  EFBIG: { code: "ZT_UNAVAILABLE", what: "file too large (a file size limit)" },
};

/**
 * A plain error that is the user's doing, not zt's, as the ZtError it stands for: a file
 * that cannot be read or written, a server that cannot be reached or does not answer, a
 * listen address that is taken or not ours.
 * Undefined for anything else (an internal error).
 */
function userFacingError(e: unknown): ZtError | undefined {
  const err = e as (NodeJS.ErrnoException & { cause?: unknown }) | undefined;
  if (!err || typeof err !== "object") return undefined;
  if (err.syscall === "listen" || err.syscall === "bind") {
    const at = (err as { address?: unknown; port?: unknown }).address;
    const port = (err as { port?: unknown }).port;
    const where =
      at !== undefined ? ` on ${String(at)}${port !== undefined ? `:${String(port)}` : ""}` : "";
    if (err.code === "EADDRINUSE")
      return new ZtError("ZT_UNAVAILABLE", `cannot listen${where}: address already in use`);
    if (err.code === "EACCES" || err.code === "EADDRNOTAVAIL")
      return new ZtError(
        "ZT_CONFIG_INVALID",
        `cannot listen${where}: ${err.code === "EACCES" ? "permission denied (a port below 1024 needs privileges)" : "not an address of this host"}`,
      );
  }
  const file = typeof err.code === "string" ? FILE_ERRORS[err.code] : undefined;
  if (file && typeof err.syscall === "string") {
    // A read of a directory carries no path; Node's message then names only the syscall.
    const where = err.path !== undefined ? `${err.path}: ` : "";
    return new ZtError(file.code, `${where}${file.what} (${err.code}, ${err.syscall})`);
  }
  if (err instanceof TypeError && err.message === "fetch failed") {
    const cause = err.cause as { message?: unknown; code?: unknown } | undefined;
    const why = typeof cause?.message === "string" ? cause.message : "no connection";
    return new ZtError("ZT_UNAVAILABLE", `cannot reach the server: ${why}`);
  }
  if (err.name === "TimeoutError")
    return new ZtError("ZT_UNAVAILABLE", "the server did not answer in time");
  return undefined;
}

/**
 * An error about a file an option names, told with the option in front
 * (`--model-out: /x: is a directory, expected a file`); other errors as they are.
 */
export function fileErrorOf(option: string, e: unknown): unknown {
  const z = isZtError(e) ? e : userFacingError(e);
  return z ? new ZtError(z.code, `${option}: ${z.message}`, z.context) : e;
}

/**
 * Opens the output file an option names (`-o`, `--model-out`) before the command does its
 * work (see beginReplaceFile): a directory, a missing folder or a place that cannot be
 * written fails the command, naming the option and the path, before anything is printed
 * or written. Commit it once all is made; discard it in a `finally`.
 */
export function openOutputFile(option: string, path: string): PendingFile {
  const named = (f: () => void): void => {
    try {
      f();
    } catch (e) {
      throw fileErrorOf(option, e);
    }
  };
  let file: PendingFile | undefined;
  named(() => (file = beginReplaceFile(path)));
  const opened = file!;
  return {
    write: (data) => named(() => opened.write(data)),
    commit: () => named(() => opened.commit()),
    discard: () => opened.discard(),
  };
}

/**
 * A `--server` value: an http:// or https:// base URL (refused with the flag named).
 * `credential` names a secret the request carries (a session token): then plain http is
 * refused unless the server is this host (the API is plain HTTP only on loopback).
 */
export function serverUrl(value: string, flag = "--server", credential?: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:"))
    throw usageError(
      `${flag}: expected an http:// or https:// URL such as https://zt.example.test:8400, got ${JSON.stringify(value)}`,
    );
  if (credential !== undefined && url.protocol === "http:" && !isLoopbackHost(url.hostname))
    throw usageError(
      `${flag}: ${credential} would cross the network in clear to ${url.host}; use https:// (plain http only to 127.0.0.1, ::1 or localhost)`,
    );
  return url;
}

/**
 * A zt API's refusal (`{ error: { code, message, ...context } }`) as the ZtError it
 * carries: the server's stable code, and so its exit code, when it is one zt knows (a
 * revoked device is a state to act on, not a server to retry); ZT_UNAVAILABLE otherwise.
 */
export function serverRefusal(server: string, status: number, body: unknown): ZtError {
  const error = (body as { error?: unknown } | null)?.["error"];
  const { code, message, ...context } = (
    typeof error === "object" && error !== null ? error : {}
  ) as Record<string, unknown>;
  const known = typeof code === "string" && Object.hasOwn(ERROR_TABLE, code);
  return new ZtError(
    known ? (code as ZtErrorCode) : "ZT_UNAVAILABLE",
    `${server}: ${typeof message === "string" ? message : `HTTP ${status}`}`,
    context,
  );
}

function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

/** Prints rows as an aligned text table. */
export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  const cells = rows.map((r) => columns.map((c) => formatCell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  process.stdout.write(line(columns.map((c) => c.toUpperCase())) + "\n");
  for (const row of cells) process.stdout.write(line(row) + "\n");
}

/**
 * One table cell, through `printable`: cells hold what users and devices sent (a device's
 * reported os, a ban reason), and a terminal would otherwise act on control characters
 * (move the cursor, retitle the window, hide lines) and bidi controls would reorder the row.
 */
function formatCell(v: unknown): string {
  if (v === null || v === undefined) return "-";
  return printable(Array.isArray(v) ? v.join(",") : String(v));
}

/**
 * Reads all of stdin (for --password-stdin and friends) as UTF-8 text, at most `maxBytes`:
 * more (stdin left on /dev/zero, a file given by mistake) is refused instead of read until
 * memory runs out, and bytes that are not UTF-8 are refused instead of replaced.
 */
export async function readStdin(maxBytes = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of process.stdin) {
    chunks.push(c as Buffer);
    total += (c as Buffer).length;
    if (total > maxBytes) {
      process.stdin.destroy();
      throw new ZtError(
        "ZT_PAYLOAD_TOO_LARGE",
        `stdin: more than ${maxBytes} bytes; expected one line`,
      );
    }
  }
  // Strict: a lenient decode turns every invalid byte into U+FFFD, so a password of
  // other bytes than it seems would be stored, and different inputs would be one.
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw usageError("stdin: not valid UTF-8 text");
  }
}

/**
 * The id of the user of this name, or ZT_USER_NOT_FOUND: `--user NAME` options
 * (`zt device list`, `zt access list`, `zt session list` and `revoke`) say a mistyped name
 * is nobody, instead of printing an empty list that reads as "this user has none".
 */
export async function userIdByName(ctx: AppContext, name: string): Promise<string> {
  const row = await ctx.store.db
    .selectFrom("users")
    .select("id")
    .where("name", "=", name)
    .executeTakeFirst();
  if (!row) throw new ZtError("ZT_USER_NOT_FOUND", `no user named ${name}`, { user: name });
  return row.id;
}

/**
 * A private key read from a file the user named (`what`: the flag and the file), or
 * ZT_PKI_KEY_INVALID naming it: an OpenSSH key or text is otherwise a decoder error with no
 * name, reported as internal or as a server that cannot be reached.
 */
export function privateKeyFromPem(pem: string, what: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new ZtError(
      "ZT_PKI_KEY_INVALID",
      `${what}: not a PEM private key (PKCS#8, SEC1 or PKCS#1), such as zt cert issue writes`,
    );
  }
}

/** Refuses, naming it, a certificate file with no PEM certificate Node can read in it. */
export function assertPemCertificate(pem: string, what: string): void {
  try {
    new X509Certificate(pem);
  } catch {
    throw new ZtError("ZT_BAD_REQUEST", `${what}: no PEM certificate in it`);
  }
}

export function usageError(message: string): ZtError {
  return new ZtError("ZT_USAGE", message);
}
