import type { Command } from "commander";
import { printJson, printTable, usageError, withContext } from "../cli-context.js";
import { parseDuration } from "../../core/duration.js";
import {
  ASSERTION_KEY_PREVIOUS_PUBLISHED_MS,
  ASSERTION_KEY_PURPOSE,
  rotateAssertionKey,
} from "../../proxy/index.js";

const actor = () => `cli:${process.env["USER"] ?? "unknown"}`;

/** `zt keys list|rotate`: zt's signing keys (private halves sealed in the store). */
export function registerKeysCommands(program: Command): void {
  const keys = program
    .command("keys")
    .description("signing keys: the identity assertion key and the audit checkpoint key");
  keys
    .command("list")
    .description("every signing key: purpose, status, and how long it stays published")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const now = ctx.clock.now();
        const rows = (await ctx.keys.list()).map((k) => ({
          kid: k.kid,
          purpose: k.purpose,
          alg: k.alg,
          status: k.status,
          created: new Date(k.createdAt).toISOString(),
          published:
            k.publishedUntil === null
              ? "yes"
              : k.publishedUntil > now
                ? `until ${new Date(k.publishedUntil).toISOString()}`
                : "no",
        }));
        if (opts.json) return printJson(rows);
        printTable(rows, ["kid", "purpose", "alg", "status", "created", "published"]);
      });
    });
  keys
    .command("rotate <purpose>")
    .description(
      "replace the assertion signing key (purpose: assertion); every PEP signs with the new key once it hears of it",
    )
    .option(
      "--keep-previous <duration>",
      "how long the old key stays in the JWKS, so assertions it signed still verify",
      "10m",
    )
    .option("--retire-now", "drop the old key from the JWKS at once (it may have leaked)")
    .action(
      async (
        purpose: string,
        opts: { keepPrevious: string; retireNow?: boolean },
        cmd: Command,
      ) => {
        await withContext(cmd, async (ctx) => {
          if (purpose !== ASSERTION_KEY_PURPOSE) {
            // The audit checkpoint key is pinned by operators (audit.checkpoint_public_key)
            // and by witnesses: rotating it is not a one-command affair.
            throw usageError(
              `zt keys rotate: purpose must be "${ASSERTION_KEY_PURPOSE}", got ${JSON.stringify(purpose)}`,
            );
          }
          let keepMs = ASSERTION_KEY_PREVIOUS_PUBLISHED_MS;
          if (opts.retireNow) keepMs = 0;
          else {
            try {
              keepMs = parseDuration(opts.keepPrevious, "--keep-previous");
            } catch (e) {
              throw usageError((e as Error).message);
            }
          }
          const r = await rotateAssertionKey(ctx, keepMs, actor());
          process.stdout.write(
            `assertion key rotated: now signing with ${r.kid}` +
              (r.previous.length === 0
                ? "\n"
                : keepMs === 0
                  ? `; retired ${r.previous.join(", ")} (no longer published)\n`
                  : `; ${r.previous.join(", ")} stays published until ${new Date(ctx.clock.now() + keepMs).toISOString()}\n`),
          );
        });
      },
    );
}
