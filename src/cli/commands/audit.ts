import {
  readFileSync,
  createWriteStream,
  openSync,
  renameSync,
  rmSync,
  type WriteStream,
} from "node:fs";
import { resolve } from "node:path";
import type { Writable } from "node:stream";
import { createPublicKey, type KeyObject } from "node:crypto";
import type { Command } from "commander";
import { printJson, usageError, warn, withContext } from "../cli-context.js";
import { isZtError, ZtError } from "../../core/errors.js";
import { readInputFile } from "../../core/read-input-file.js";
import { parseDuration } from "../../core/duration.js";
import { refuseDirectoryTarget, tempPathBeside } from "../../core/secure-files.js";
import { printable } from "../../core/printable.js";
import {
  CHECKPOINT_KEY_PURPOSE,
  Checkpointer,
  fileWitness,
  parseAlertsConfig,
  parseAuditConfig,
  queryAudit,
  readCheckpointPublicKey,
  splitCheckpointNotes,
  toJsonRecord,
  toOcsf,
  verifyAuditLog,
  type AuditRowChained,
  type ExternalNote,
} from "../../audit/index.js";

/** `zt audit verify|export|tail|explain|checkpoint|public-key` */
export function registerAuditCommands(program: Command): void {
  const audit = program.command("audit").description("the tamper-evident audit log");

  audit
    .command("verify")
    .description(
      "re-walk the hash chain and check every signed checkpoint, with every note of the configured witness file",
    )
    .option("--from <seq>", "start at this sequence number (trusting the event before it)")
    .option("--checkpoint <file...>", "also check every checkpoint note in these files")
    .option(
      "--key <file>",
      "trust only this public key (PEM) for checkpoints (default: audit.checkpoint_public_key)",
    )
    .option("--json", "print the result as JSON")
    .action(
      async (
        opts: { from?: string; checkpoint?: string[]; key?: string; json?: boolean },
        cmd: Command,
      ) => {
        await withContext(cmd, async (ctx) => {
          const fromSeq =
            opts.from === undefined ? undefined : parsePositiveInt(opts.from, "--from");
          if (fromSeq !== undefined && fromSeq > 1) {
            // Past the end there is nothing to verify: say where the log ends, rather than
            // report the start point's predecessor as missing (which reads as tampering).
            const last = await lastSeq(ctx.store);
            if (fromSeq > last)
              throw usageError(
                `--from ${fromSeq} is past the end of the audit log (${last === 0 ? "the log is empty" : `last sequence ${last}`})`,
              );
          }
          const conf = parseAuditConfig(ctx.config.audit, ctx.config.trust_domain);
          const inConfigDir = (p: string) => resolve(ctx.config.configDir, p);
          const notes: ExternalNote[] = [];
          for (const f of opts.checkpoint ?? []) {
            const found = notesIn(readText(f, "--checkpoint"), `--checkpoint ${f}`);
            // Named to anchor the check: a file with no note (empty, the wrong one) would
            // anchor nothing, yet the check would pass.
            if (found.length === 0)
              throw new ZtError(
                "ZT_AUDIT_CHECKPOINT_INVALID",
                `--checkpoint ${f}: no checkpoint note in it`,
              );
            notes.push(...found);
          }
          // The configured witness is what anchors the check outside the database, so it
          // is read by default: every note in it, not only the newest.
          const warnings: string[] = [];
          if (conf.witness.file) {
            const file = inConfigDir(conf.witness.file);
            const text = readWitnessFile(file);
            if (text === undefined)
              warnings.push(
                `the configured witness file ${file} does not exist (nothing was pushed to it yet, or it is not reachable from here), so it anchored nothing`,
              );
            else notes.push(...notesIn(text, `witness file ${file}`));
          }
          let keys: KeyObject[] = [];
          if (opts.key) keys = [readPublicKey(opts.key)];
          else if (conf.checkpoint_public_key)
            keys = [readCheckpointPublicKey(inConfigDir(conf.checkpoint_public_key))];
          const bar = progressBar();
          const verified = await verifyAuditLog(ctx.store, {
            ...(fromSeq !== undefined ? { fromSeq } : {}),
            checkpointNotes: notes,
            publicKeys: keys,
            onlyGivenKeys: keys.length > 0,
            onProgress: bar.update,
          });
          bar.done();
          const result = { ...verified, warnings: [...warnings, ...verified.warnings] };
          if (opts.json) printJson(result);
          else {
            if (result.ok) {
              process.stdout.write(
                `ok: ${result.checked} events verified (${result.fromSeq}..${result.lastSeq}), ` +
                  `${result.checkpointsChecked} checkpoints matched, head ${result.headHash}\n`,
              );
            } else {
              const p = result.problem!;
              process.stdout.write(
                `FAILED at seq ${p.seq}: ${p.kind}: ${p.detail}\n` +
                  `  (${result.checked} events verified before it; last good seq ${result.lastSeq})\n`,
              );
            }
            if (result.anchored) {
              const after =
                result.lastSeq > result.anchoredThrough
                  ? `; events ${result.anchoredThrough + 1}..${result.lastSeq} are checked only against the database`
                  : "";
              process.stdout.write(
                `anchored by ${result.externalCheckpoints} checkpoint notes from outside the database, the newest covering events 1..${result.anchoredThrough}${after}\n`,
              );
            }
            for (const w of result.warnings) process.stdout.write(`warning: ${w}\n`);
          }
          return result.ok ? 0 : 1;
        });
      },
    );

  audit
    .command("export")
    .description("export events as JSON lines (zt's schema or OCSF)")
    .option("--since <when>", "a duration back from now (24h), an ISO time or epoch ms", "24h")
    .option("--until <when>", "same forms as --since")
    .option("--format <format>", "jsonl | ocsf", "jsonl")
    .option("-o, --output <file>", "write to a file instead of stdout")
    .action(
      async (
        opts: { since: string; until?: string; format: string; output?: string },
        cmd: Command,
      ) => {
        await withContext(cmd, async (ctx) => {
          if (opts.format !== "jsonl" && opts.format !== "ocsf") {
            throw usageError(
              `--format: expected jsonl or ocsf, got ${JSON.stringify(opts.format)}`,
            );
          }
          const now = ctx.clock.now();
          const since = parseWhen(opts.since, now, "--since");
          const until =
            opts.until === undefined ? undefined : parseWhen(opts.until, now, "--until");
          if (until !== undefined && until < since)
            throw usageError(
              `--until ${JSON.stringify(opts.until)} is before --since ${JSON.stringify(opts.since)}: no event can be in between`,
            );
          // To a new file beside the output (0600, created exclusively: never through a
          // planted file or symlink), renamed over it once complete: an existing file is
          // replaced whole, with 0600, and a failed export leaves it as it was.
          if (opts.output) {
            try {
              refuseDirectoryTarget(opts.output);
            } catch (e) {
              throw exportFailed(opts.output, e as Error);
            }
          }
          const tmp = opts.output ? tempPathBeside(opts.output) : undefined;
          const out: Writable = tmp ? openExportFile(tmp, opts.output!) : process.stdout;
          let failed: Error | undefined;
          if (tmp) out.on("error", (e) => (failed = e));
          try {
            let after = 0;
            let n = 0;
            while (true) {
              const rows = await queryAudit(ctx.store, {
                afterSeq: after,
                since,
                ...(until !== undefined ? { until } : {}),
                limit: 5_000,
              });
              if (rows.length === 0) break;
              let chunk = "";
              for (const r of rows)
                chunk +=
                  JSON.stringify(opts.format === "ocsf" ? toOcsf(r) : toJsonRecord(r)) + "\n";
              if (!out.write(chunk))
                await new Promise<void>((r) => {
                  out.once("drain", () => r());
                  out.once("error", () => r());
                });
              if (failed) throw exportFailed(opts.output, failed);
              n += rows.length;
              after = rows[rows.length - 1]!.seq;
            }
            if (opts.output && tmp) {
              const file = out as WriteStream;
              await new Promise<void>((res) => {
                file.once("error", () => res());
                file.end(() => res());
              });
              if (failed) throw exportFailed(opts.output, failed);
              try {
                renameSync(tmp, opts.output);
              } catch (e) {
                throw exportFailed(opts.output, e as Error);
              }
              process.stderr.write(`exported ${n} events to ${opts.output}\n`);
            }
          } finally {
            if (tmp) {
              (out as WriteStream).destroy();
              rmSync(tmp, { force: true });
            }
          }
        });
      },
    );

  audit
    .command("tail")
    .description("show the newest events")
    .option("-n, --lines <n>", "how many", "20")
    .option("-f, --follow", "keep printing new events")
    .option("--json", "one JSON object per line")
    .action(async (opts: { lines: string; follow?: boolean; json?: boolean }, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const n = parsePositiveInt(opts.lines, "--lines", true);
        const newest = n === 0 ? [] : await queryAudit(ctx.store, { newest: true, limit: n });
        const print = (r: AuditRowChained) =>
          process.stdout.write(
            (opts.json ? JSON.stringify(toJsonRecord(r)) : formatTailLine(r)) + "\n",
          );
        newest.reverse().forEach(print);
        if (!opts.follow) return;
        let after = newest.length ? newest[newest.length - 1]!.seq : await lastSeq(ctx.store);
        let stop = false;
        const onSig = () => (stop = true);
        process.once("SIGINT", onSig);
        process.once("SIGTERM", onSig);
        while (!stop) {
          const rows = await queryAudit(ctx.store, { afterSeq: after, limit: 1_000 });
          rows.forEach(print);
          if (rows.length) after = rows[rows.length - 1]!.seq;
          else await new Promise((r) => setTimeout(r, 300));
        }
      });
    });

  audit
    .command("explain <decision-id>")
    .description("print the stored record of one access decision")
    .option("--json", "print the record as JSON")
    .action(async (decisionId: string, opts: { json?: boolean }, cmd: Command) => {
      if (decisionId === "")
        throw usageError("decision id: an empty value; give the id from a denial (dec_…)");
      if (decisionId.length > 200)
        throw usageError("decision id: longer than 200 characters; no decision id is");
      await withContext(cmd, async (ctx) => {
        const rows = await queryAudit(ctx.store, { decisionId, limit: 10 });
        const row = rows.find((r) => r.kind.startsWith("decision")) ?? rows[0];
        if (!row)
          throw new ZtError("ZT_NOT_FOUND", `no decision ${decisionId} in the audit log`, {
            decisionId,
          });
        if (opts.json) {
          printJson(toJsonRecord(row));
          return;
        }
        process.stdout.write(formatExplain(row));
      });
    });

  audit
    .command("checkpoint")
    .description("sign a checkpoint of the current head now and push it to the witnesses")
    .action(async (_opts: unknown, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const conf = parseAuditConfig(ctx.config.audit, ctx.config.trust_domain);
        const inConfigDir = (p: string) => resolve(ctx.config.configDir, p);
        const webhook = parseAlertsConfig(ctx.config.alerts).webhook;
        const cp = new Checkpointer({
          store: ctx.store,
          keys: ctx.keys,
          clock: ctx.clock,
          origin: conf.origin,
          every: conf.checkpoint_every,
          intervalMs: conf.checkpointIntervalMs,
          witnesses: conf.witness.file ? [fileWitness(inConfigDir(conf.witness.file))] : [],
          onWitnessError: (w, e) => warn(`witness ${w}: ${(e as Error).message}`),
          ...(conf.checkpoint_public_key
            ? { publicKeys: [readCheckpointPublicKey(inConfigDir(conf.checkpoint_public_key))] }
            : {}),
          audit: ctx.audit,
          ...(webhook ? { alertWebhook: webhook } : {}),
        });
        const note = await cp.checkpointNow();
        if (note) process.stdout.write(note);
        else process.stderr.write("no new events since the last checkpoint\n");
      });
    });

  audit
    .command("public-key")
    .description("print the checkpoint signing public key (PEM), for verifiers and witnesses")
    .action(async (_opts: unknown, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const key = await ctx.keys.activeKey(CHECKPOINT_KEY_PURPOSE, "EdDSA");
        process.stdout.write(key.publicKey.export({ format: "pem", type: "spki" }).toString());
      });
    });
}

async function lastSeq(store: Parameters<typeof queryAudit>[0]): Promise<number> {
  const rows = await queryAudit(store, { newest: true, limit: 1 });
  return rows[0]?.seq ?? 0;
}

/** One human line: time, kind, outcome, subject, source, route, action, reason, decision id. */
export function formatTailLine(r: AuditRowChained): string {
  const d = (v: string | null) => (v === null ? "-" : printable(v));
  return [
    new Date(r.ts).toISOString(),
    printable(r.kind).padEnd(16),
    printable(r.outcome).padEnd(7),
    d(r.subject).padEnd(12),
    d(r.source_ip).padEnd(15),
    d(r.route).padEnd(10),
    d(r.action).padEnd(6),
    d(r.reason).padEnd(20),
    d(r.decision_id),
  ].join(" ");
}

function formatExplain(r: AuditRowChained): string {
  const data = JSON.parse(r.data) as Record<string, unknown>;
  const p = (v: string | null) => (v === null ? "-" : printable(v));
  const lines = [
    `decision  ${p(r.decision_id)}`,
    `time      ${new Date(r.ts).toISOString()}  (audit seq ${r.seq})`,
    `verdict   ${p(r.outcome)}${r.reason ? `  reason: ${p(r.reason)}` : ""}`,
    `subject   ${p(r.subject)}`,
    `source    ${p(r.source_ip)}`,
    `route     ${p(r.route)}`,
    `action    ${p(r.action)}`,
    `policies  ${r.policies ? printable((JSON.parse(r.policies) as string[]).join(", ")) || "(none)" : "(none)"}`,
  ];
  for (const [k, v] of Object.entries(data)) {
    // JSON escapes C0 controls but not C1 ones: each line goes through printable too.
    const text =
      typeof v === "string"
        ? printable(v)
        : (JSON.stringify(v, null, 2) ?? "null")
            .split("\n")
            .map((l) => printable(l))
            .join("\n          ");
    lines.push(`${printable(k).padEnd(9)} ${text}`);
  }
  return lines.join("\n") + "\n";
}

function parsePositiveInt(text: string, flag: string, allowZero = false): number {
  if (!/^\d{1,15}$/.test(text) || (!allowZero && Number(text) === 0)) {
    throw usageError(
      `${flag}: expected a ${allowZero ? "non-negative" : "positive"} integer, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

/** The largest time a JavaScript Date can hold, in epoch milliseconds. */
const MAX_DATE_MS = 8.64e15;

/** A duration back from now (`24h`), an ISO 8601 time, or epoch milliseconds. */
export function parseWhen(text: string, nowMs: number, flag: string): number {
  if (/^\d{12,}$/.test(text)) {
    const ms = Number(text);
    // Past what a Date can hold (year 275760) no event can be at or after it.
    if (ms > MAX_DATE_MS)
      throw usageError(`${flag}: epoch ms ${JSON.stringify(text)} is not a date`);
    return ms;
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (Number.isNaN(t))
      throw usageError(`${flag}: not a valid ISO 8601 time: ${JSON.stringify(text)}`);
    return t;
  }
  try {
    return nowMs - parseDuration(text, flag);
  } catch {
    throw usageError(
      `${flag}: expected a duration (24h), an ISO time or epoch ms, got ${JSON.stringify(text)}`,
    );
  }
}

function readText(file: string, flag: string): string {
  try {
    return readInputFile(file);
  } catch (e) {
    if (isZtError(e)) throw usageError(`${flag}: ${e.message}`);
    throw usageError(
      `${flag}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/** Every note in a file of checkpoint notes; a damaged file is an error naming it. */
function notesIn(text: string, source: string): ExternalNote[] {
  try {
    return splitCheckpointNotes(text).map((note) => ({ note, source }));
  } catch (e) {
    throw new ZtError("ZT_AUDIT_CHECKPOINT_INVALID", `${source}: ${(e as Error).message}`);
  }
}

/** The witness file's text, or undefined when it does not exist (yet). */
function readWitnessFile(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new ZtError(
      "ZT_AUDIT_CHECKPOINT_INVALID",
      `audit.witness.file: cannot read ${file}: ${code ?? (e as Error).message}`,
    );
  }
}

function readPublicKey(file: string): KeyObject {
  try {
    return createPublicKey(readText(file, "--key"));
  } catch (e) {
    if (e instanceof ZtError) throw e;
    throw usageError(`--key: ${file} is not a PEM public key`);
  }
}

function progressBar(): { update: (done: number, total: number) => void; done: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, done: () => undefined };
  let shown = false;
  return {
    update(done, total) {
      shown = true;
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const width = 30;
      const fill = Math.round(frac * width);
      process.stderr.write(
        `\rverifying [${"#".repeat(fill)}${".".repeat(width - fill)}] ${done}/${total} ${Math.round(frac * 100)}%`,
      );
    },
    done() {
      if (shown) process.stderr.write("\n");
    },
  };
}

/** Opens the export's temporary file (0600, exclusively), or fails naming `-o`'s value. */
function openExportFile(tmp: string, output: string): WriteStream {
  let fd: number;
  try {
    fd = openSync(tmp, "wx", 0o600);
  } catch (e) {
    throw exportFailed(output, e as Error);
  }
  return createWriteStream("", { fd });
}

function exportFailed(output: string | undefined, e: Error): ZtError {
  return new ZtError(
    "ZT_BAD_REQUEST",
    `-o ${output ?? ""}: cannot write the export there (${(e as NodeJS.ErrnoException).code ?? e.message})`,
    { path: output },
  );
}
