import type { Command } from "commander";
import { ZtError } from "../../core/errors.js";
import { SessionService } from "../../session/index.js";
import { printJson, printTable, usageError, userIdByName, withContext } from "../cli-context.js";

/** `zt session list|revoke` — the Policy Administrator's session table. */
export function registerSessionCommands(program: Command): void {
  const session = program.command("session").description("list and revoke sessions");

  session
    .command("list")
    .description("active sessions")
    .option("--user <name>", "only this user's sessions")
    .option("--all", "include revoked and expired sessions")
    .option("--json", "JSON output")
    .action(async (opts: { user?: string; all?: boolean; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const users = await ctx.store.db.selectFrom("users").select(["id", "name"]).execute();
        const nameOf = new Map(users.map((u) => [u.id, u.name]));
        const userId = opts.user ? await userIdByName(ctx, opts.user) : undefined;
        const sessions = new SessionService(ctx);
        const list = await sessions.list({
          ...(userId ? { userId } : {}),
          includeInactive: opts.all ?? false,
        });
        sessions.close();
        const rows = list.map((s) => ({
          id: s.id,
          user: nameOf.get(s.userId) ?? s.userId,
          created: new Date(s.createdAt).toISOString(),
          expires: new Date(s.expiresAt).toISOString(),
          mfa_at: new Date(s.mfaAt).toISOString(),
          source_ip: s.sourceIp,
          revoked: s.revokedAt
            ? `${new Date(s.revokedAt).toISOString()} (${s.revokeReason})`
            : null,
        }));
        if (opts.json) printJson(rows);
        else printTable(rows, ["id", "user", "created", "expires", "source_ip", "revoked"]);
      }),
    );

  session
    .command("revoke")
    .description("revoke a session (or every session of a user); enforced at once by every PEP")
    .argument("[id]", "session id")
    .option("--user <name>", "revoke all of this user's sessions")
    .option("--reason <text>", "reason recorded in the audit log", "revoked-by-admin")
    .option("--json", "JSON output")
    .action(
      async (
        id: string | undefined,
        opts: { user?: string; reason: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          if ((id === undefined) === (opts.user === undefined))
            throw usageError("give a session ID or --user NAME (one of them)");
          const sessions = new SessionService(ctx);
          try {
            let n: number;
            if (opts.user) {
              n = await sessions.revokeUser(await userIdByName(ctx, opts.user), opts.reason);
            } else {
              const s = await sessions.get(id!);
              if (!s) throw new ZtError("ZT_NOT_FOUND", `no session ${id}`);
              n = await sessions.revoke([id!], opts.reason);
            }
            if (opts.json) printJson({ revoked: n });
            else process.stdout.write(`revoked ${n} session(s)\n`);
          } finally {
            sessions.close();
          }
        }),
    );
}
