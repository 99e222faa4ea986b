import type { Command } from "commander";
import {
  failWith,
  printJson,
  printTable,
  usageError,
  userIdByName,
  withContext,
} from "../cli-context.js";
import { parseDuration } from "../../core/duration.js";
import { addBan, listBans, MAX_BAN_REASON_LENGTH, removeBan } from "../../audit/index.js";
import { parseUserName } from "../../identity/index.js";

const actor = () => `cli:${process.env["USER"] ?? "unknown"}`;

/**
 * `user:NAME` as sign-in and the PEP see the name (trimmed, lowercase, a valid user name):
 * `user:Alice` was recorded as is and matched nobody, so Alice kept signing in.
 * Addresses and networks are left to banKey.
 */
function banTarget(target: string): string {
  if (!target.startsWith("user:")) return target;
  return `user:${parseUserName(target.slice(5).trim().toLowerCase(), "user")}`;
}

/**
 * A stored time as ISO 8601; one past what a Date holds (a ban added before --for was
 * bounded) as its number, instead of `Invalid time value` ending the whole listing.
 */
function printableTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${ms} (not a date)` : d.toISOString();
}

/** `zt ban list|add|remove` */
export function registerBanCommands(program: Command): void {
  const ban = program.command("ban").description("banned sources and users (refused at the PEP)");
  ban
    .command("list")
    .description("active bans")
    .option("--all", "include expired and lifted bans")
    .option("--json", "print JSON")
    .action(async (opts: { all?: boolean; json?: boolean }, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const rows = await listBans(ctx.store, ctx.clock.now(), opts.all ?? false);
        if (opts.json) return printJson(rows);
        printTable(
          rows.map((r) => ({
            key: r.key,
            until: printableTime(r.until),
            rule: r.rule,
            count: r.count,
            lifted: r.lifted_at === null ? null : printableTime(r.lifted_at),
            reason: r.reason,
          })),
          ["key", "until", "rule", "count", "lifted", "reason"],
        );
      });
    });
  ban
    .command("add <target>")
    .description("ban an IP address, a network (2001:db8:1:2::/64) or user:<name> by hand")
    .requiredOption("--for <duration>", "how long, e.g. 1h")
    .option("--reason <text>", `why (at most ${MAX_BAN_REASON_LENGTH} characters)`, "manual")
    .action(async (target: string, opts: { for: string; reason: string }, cmd: Command) => {
      // Checked before the store is opened: a reason pasted by mistake (a log, a file)
      // would otherwise go into the store, the audit record and every listing.
      const length = [...opts.reason].length;
      if (length > MAX_BAN_REASON_LENGTH) {
        failWith(
          usageError(`--reason: at most ${MAX_BAN_REASON_LENGTH} characters, got ${length}`),
        );
        return;
      }
      await withContext(cmd, async (ctx) => {
        let ms: number;
        try {
          ms = parseDuration(opts.for, "--for");
        } catch (e) {
          throw usageError((e as Error).message);
        }
        if (ms <= 0)
          throw usageError(`--for: expected a duration above 0, got ${JSON.stringify(opts.for)}`);
        const key = banTarget(target);
        // A mistyped name (user:alcie) would be banned in place of the user meant, who
        // would go on signing in while the command said "banned".
        if (key.startsWith("user:")) await userIdByName(ctx, key.slice(5));
        const row = await addBan(ctx, key, ms, opts.reason, actor());
        process.stdout.write(`banned ${row.key} until ${new Date(row.until).toISOString()}\n`);
      });
    });
  ban
    .command("remove <target>")
    .description("lift a ban: an IP address, a network, ip:<address or network> or user:<name>")
    .action(async (target: string, _opts: unknown, cmd: Command) => {
      await withContext(cmd, async (ctx) => {
        const key = banTarget(target);
        await removeBan(ctx, key, actor());
        process.stdout.write(`lifted the ban on ${key}\n`);
      });
    });
}
