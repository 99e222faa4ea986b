import type { Command } from "commander";
import { printJson, printTable, usageError, withContext } from "../cli-context.js";
import { parseWhen } from "./audit.js";

/** `zt alerts list` */
export function registerAlertsCommands(program: Command): void {
  const alerts = program.command("alerts").description("alerts fired by the rules in `alerts:`");
  alerts
    .command("list")
    .description("list fired alerts, newest first")
    .option("--since <when>", "a duration back from now (24h), an ISO time or epoch ms", "24h")
    .option("--rule <rule>", "only this rule")
    .option("-n, --limit <n>", "at most this many", "100")
    .option("--json", "print JSON")
    .action(
      async (
        opts: { since: string; rule?: string; limit: string; json?: boolean },
        cmd: Command,
      ) => {
        await withContext(cmd, async (ctx) => {
          const since = parseWhen(opts.since, ctx.clock.now(), "--since");
          if (!/^\d{1,6}$/.test(opts.limit) || Number(opts.limit) === 0)
            throw usageError(
              `--limit: expected a whole number from 1 to 999999, got ${JSON.stringify(opts.limit)}`,
            );
          const limit = Number(opts.limit);
          let q = ctx.store.db.selectFrom("audit_alerts").selectAll().where("ts", ">=", since);
          if (opts.rule) q = q.where("rule", "=", opts.rule);
          const rows = await q.orderBy("ts", "desc").orderBy("seq", "desc").limit(limit).execute();
          const out = rows.map((r) => ({
            time: new Date(Number(r.ts)).toISOString(),
            rule: r.rule,
            severity: r.severity,
            key: r.key,
            seq: Number(r.seq),
            message: r.message,
            ...(opts.json ? { id: r.id, data: JSON.parse(r.data) as unknown } : {}),
          }));
          if (opts.json) printJson(out);
          else printTable(out, ["time", "severity", "rule", "key", "seq", "message"]);
        });
      },
    );
}
