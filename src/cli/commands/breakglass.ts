import type { Command } from "commander";
import { AccessService } from "../../access/index.js";
import { printJson, withContext } from "../cli-context.js";
import { actingUser, requestJson } from "./access.js";

/** `zt breakglass` — emergency access for designated accounts; always a critical alert. */
export function registerBreakglassCommands(program: Command): void {
  program
    .command("breakglass")
    .description(
      "emergency access (designated accounts only): a ≤1h, non-renewable grant; raises a critical alert",
    )
    .requiredOption(
      "--resource <resource>",
      'an app (App::"db-admin") or an SSH host group (HostGroup::"prod")',
    )
    .requiredOption("--reason <text>", "why (sent with the alert)")
    .option("--as <user>", "the break-glass account (default: $ZT_USER)")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { resource: string; reason: string; as?: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const user = actingUser(opts.as, "the break-glass account");
          const r = await new AccessService(ctx).breakglass({
            user,
            resource: opts.resource,
            reason: opts.reason,
          });
          if (opts.json) printJson(requestJson(r));
          else
            process.stdout.write(
              `BREAK-GLASS ${r.id}: ${r.user} may use ${r.resource} until ${new Date(r.expiresAt!).toISOString()}. A critical alert was raised.\n`,
            );
        }),
    );
}
