import type { Command } from "commander";
import { formatDuration, parseDuration } from "../../core/duration.js";
import { AccessService, type AccessRequest, type AccessStatus } from "../../access/index.js";
import type { AppContext } from "../../app/index.js";
import { userIdByName, printJson, printTable, usageError, withContext } from "../cli-context.js";

/**
 * The user a CLI command acts as: `--as NAME`, else $ZT_USER. The CLI works on the
 * store directly, so whoever can run it against the data directory / database is an
 * operator; `--as` names the person for approvals and the audit log, it does not
 * authenticate them (see docs/continuous-verification.md, "Trust model").
 */
export function actingUser(as: string | undefined, role: string): string {
  const name = as ?? process.env["ZT_USER"];
  if (!name) throw usageError(`say who you are (${role}): --as NAME or ZT_USER=NAME`);
  return name;
}

export function requestJson(r: AccessRequest): Record<string, unknown> {
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
  return {
    id: r.id,
    kind: r.kind,
    user: r.user,
    resource: r.resource,
    status: r.status,
    reason: r.reason,
    ttl: formatDuration(r.ttlMs),
    approvals: r.approvals.map((a) => a.by),
    required_approvals: r.requiredApprovals,
    created: iso(r.createdAt),
    expires: iso(r.expiresAt),
    decided_by: r.decidedBy,
  };
}

function print(r: AccessRequest, json: boolean | undefined): void {
  if (json) printJson(requestJson(r));
  else printTable([requestJson(r)], ["id", "user", "resource", "status", "approvals", "expires"]);
}

const STATUSES = ["pending", "approved", "denied", "revoked", "expired"];

/** `zt access request|approve|deny|revoke|list|show` — just-in-time access. */
export function registerAccessCommands(program: Command): void {
  const access = program
    .command("access")
    .description("just-in-time access: requests, approvals, time-boxed grants");

  access
    .command("request")
    .description(
      "ask for time-boxed access to an app or SSH host group; members of its approver group approve",
    )
    .requiredOption(
      "--resource <resource>",
      'an app (App::"db-admin" or db-admin) or an SSH host group (HostGroup::"prod")',
    )
    .requiredOption("--reason <text>", "why (recorded and sent to approvers)")
    .option("--ttl <duration>", "how long the grant lasts once approved", "1h")
    .option("--as <user>", "who asks (default: $ZT_USER)")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { resource: string; reason: string; ttl: string; as?: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const user = actingUser(opts.as, "the requester");
          print(
            await new AccessService(ctx).request({
              user,
              resource: opts.resource,
              reason: opts.reason,
              ttlMs: parseDuration(opts.ttl, "--ttl"),
            }),
            opts.json,
          );
        }),
    );

  for (const [verb, what] of [
    ["approve", "approve a request (approver group members only, never your own)"],
    ["deny", "deny a pending request"],
    ["revoke", "end an active grant (or withdraw a pending request) at once"],
  ] as const) {
    access
      .command(verb)
      .description(what)
      .argument("<id>", "request id")
      .option("--as <user>", "who does it (default: $ZT_USER)")
      .option("--json", "JSON output")
      .action(async (id: string, opts: { as?: string; json?: boolean }, cmd: Command) =>
        withContext(cmd, async (ctx) => {
          const by = actingUser(opts.as, verb === "approve" ? "the approver" : "who does it");
          const svc = new AccessService(ctx);
          print(
            verb === "approve"
              ? await svc.approve(id, by)
              : verb === "deny"
                ? await svc.deny(id, by)
                : await svc.revoke(id, by),
            opts.json,
          );
        }),
      );
  }

  access
    .command("list")
    .description("access requests and grants")
    .option("--status <status>", `only ${STATUSES.join("|")}`)
    .option("--user <name>", "only this user's requests")
    .option("--json", "JSON output")
    .action(async (opts: { status?: string; user?: string; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        if (opts.status && !STATUSES.includes(opts.status))
          throw usageError(`--status: expected one of ${STATUSES.join(", ")}`);
        const list = await new AccessService(ctx).list({
          ...(opts.status ? { status: opts.status as AccessStatus } : {}),
          ...(opts.user ? { user: opts.user } : {}),
        });
        // A deleted user's requests stay on record and are listed; a name with neither a
        // user nor any request is a mistake, said as such (not an empty list).
        if (opts.user && list.length === 0 && !(await hasRequests(ctx, opts.user)))
          await userIdByName(ctx, opts.user);
        if (opts.json) printJson(list.map(requestJson));
        else
          printTable(list.map(requestJson), [
            "id",
            "kind",
            "user",
            "resource",
            "status",
            "approvals",
            "expires",
            "reason",
          ]);
      }),
    );

  access
    .command("show")
    .argument("<id>", "request id")
    .action(async (id: string, _opts: unknown, cmd: Command) =>
      withContext(cmd, async (ctx) => printJson(requestJson(await new AccessService(ctx).get(id)))),
    );
}

/** Whether any access request of `userName` is on record, whatever its status. */
async function hasRequests(ctx: AppContext, userName: string): Promise<boolean> {
  const row = await ctx.store.db
    .selectFrom("access_requests")
    .select("id")
    .where("user_name", "=", userName)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}
