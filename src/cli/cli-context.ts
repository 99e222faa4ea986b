import type { Command } from "commander";
import { configPathFrom, loadConfig, type ZtConfig } from "../config/index.js";
import { openAppContext, type AppContext } from "../app/index.js";
import { isZtError, ZtError } from "../core/errors.js";

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
    ctx = await openAppContext(config, { env: process.env, create: options.create ?? false });
    const code = await body(ctx);
    await ctx.close();
    ctx = undefined;
    process.exitCode = code ?? 0;
  } catch (e) {
    if (ctx) await ctx.close().catch(() => undefined);
    failWith(e);
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

export function failWith(e: unknown): void {
  if (isZtError(e)) {
    process.stderr.write(`zt: error ${e.code}: ${e.message}\n`);
    process.exitCode = e.exitCode;
    return;
  }
  const err = e as Error;
  process.stderr.write(`zt: error ZT_INTERNAL: ${err?.message ?? String(e)}\n`);
  if (process.env["ZT_DEBUG"]) process.stderr.write(`${err?.stack ?? ""}\n`);
  process.exitCode = 70;
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

function formatCell(v: unknown): string {
  if (v === null || v === undefined) return "-";
  if (Array.isArray(v)) return v.join(",");
  return String(v);
}

/** Reads all of stdin (for --password-stdin and friends). */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export function usageError(message: string): ZtError {
  return new ZtError("ZT_USAGE", message);
}
