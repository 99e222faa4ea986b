import type { Command } from "commander";
import {
  identityService,
  printTotpEnrolment,
  type AddUserResult,
  type MfaEnrolment,
  type UserInfo,
} from "../../identity/index.js";
import { printJson, printTable, readStdin, usageError, withContext } from "../cli-context.js";

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function userJson(u: UserInfo): Record<string, unknown> {
  return {
    id: u.id,
    name: u.name,
    email: u.email,
    groups: u.groups,
    disabled: u.disabled,
    created_at: new Date(u.createdAt).toISOString(),
  };
}

function enrolmentJson(e: MfaEnrolment): Record<string, unknown> {
  return { totp_uri: e.totpUri, totp_secret: e.totpSecret, backup_codes: e.backupCodes };
}

/** Strips the one line ending a shell or `echo` adds; keeps every other character. */
/** The password on stdin: one line, its line end dropped. */
function passwordFromStdin(text: string): string {
  const password = text.replace(/\r?\n$/, "");
  // "pass\nsecond" would become a password no sign-in form can send.
  if (/[\r\n]/.test(password))
    throw usageError("--password-stdin: expected the password on one line, got several lines");
  return password;
}

/** `zt user add|list|disable|enable|groups|password|delete|unlock` and `zt mfa reset`. */
export function registerUserCommands(program: Command): void {
  const user = program.command("user").description("manage users and groups (identity provider)");

  user
    .command("add")
    .description("create a user with a TOTP authenticator and backup codes (shown once)")
    .argument("<name>", "user name: lowercase letters, digits, . _ -")
    .option("--group <group>", "add to a group (repeatable; created on first use)", collect, [])
    .option("--email <email>", "e-mail address")
    .option("--password-stdin", "read the password from stdin (default: generate one)")
    .option("--no-qr", "do not print the QR code")
    .option("--json", "JSON output")
    .action(
      async (
        name: string,
        opts: {
          group: string[];
          email?: string;
          passwordStdin?: boolean;
          qr: boolean;
          json?: boolean;
        },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          let password: string | undefined;
          if (opts.passwordStdin) {
            if (process.stdin.isTTY)
              throw usageError(
                '--password-stdin expects the password on a pipe, e.g. printf %s "$PW" | zt user add …',
              );
            password = passwordFromStdin(await readStdin());
          }
          const r: AddUserResult = await identityService(ctx).addUser({
            name,
            groups: opts.group,
            ...(opts.email !== undefined ? { email: opts.email } : {}),
            ...(password !== undefined ? { password } : {}),
          });
          if (opts.json) {
            printJson({
              ...userJson(r.user),
              ...(r.password !== undefined ? { password: r.password } : {}),
              ...enrolmentJson(r),
            });
            return;
          }
          process.stdout.write(
            `Created user ${r.user.name}${r.user.groups.length ? ` in ${r.user.groups.join(", ")}` : ""}.\n`,
          );
          printTotpEnrolment({
            name: r.user.name,
            totpUri: r.totpUri,
            totpSecret: r.totpSecret,
            backupCodes: r.backupCodes,
            ...(r.password !== undefined ? { password: r.password } : {}),
            qr: opts.qr,
          });
        }),
    );

  user
    .command("list")
    .description("all users with their groups")
    .option("--json", "JSON output")
    .action(async (opts: { json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const users = await identityService(ctx).listUsers();
        if (opts.json) {
          printJson(users.map(userJson));
          return;
        }
        printTable(
          users.map((u) => ({ ...userJson(u), status: u.disabled ? "disabled" : "active" })),
          ["name", "groups", "email", "status", "created_at"],
        );
      }),
    );

  for (const [verb, disabled] of [
    ["disable", true],
    ["enable", false],
  ] as const) {
    user
      .command(verb)
      .description(
        disabled
          ? "disable a user; their live sessions are re-checked and denied"
          : "enable a user again",
      )
      .argument("<name>", "user name")
      .option("--json", "JSON output")
      .action(async (name: string, opts: { json?: boolean }, cmd: Command) =>
        withContext(cmd, async (ctx) => {
          const u = await identityService(ctx).setDisabled(name, disabled);
          if (opts.json) printJson(userJson(u));
          else process.stdout.write(`User ${u.name} is ${disabled ? "disabled" : "enabled"}.\n`);
        }),
      );
  }

  user
    .command("groups")
    .description("show or change a user's groups")
    .argument("<name>", "user name")
    .option("--add <group>", "add to a group (repeatable)", collect, [])
    .option("--remove <group>", "remove from a group (repeatable)", collect, [])
    .option("--json", "JSON output")
    .action(
      async (
        name: string,
        opts: { add: string[]; remove: string[]; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const identity = identityService(ctx);
          const both = opts.add.filter((g) => opts.remove.includes(g));
          if (both.length > 0) throw usageError(`group ${both[0]} is both in --add and --remove`);
          let u: UserInfo | undefined;
          if (opts.add.length === 0 && opts.remove.length === 0) {
            u = await identity.getUser(name);
            if (!u) {
              // Let the service produce the precise error (bad name or unknown user).
              u = await identity.changeGroups(name, {});
            }
          } else {
            u = await identity.changeGroups(name, { add: opts.add, remove: opts.remove });
          }
          if (opts.json) printJson(userJson(u));
          else
            process.stdout.write(
              `${u.name}: ${u.groups.length ? u.groups.join(", ") : "(no groups)"}\n`,
            );
        }),
    );

  user
    .command("password")
    .description("set a new password (generated and shown once unless --password-stdin)")
    .argument("<name>", "user name")
    .option("--password-stdin", "read the password from stdin")
    .option("--json", "JSON output")
    .action(async (name: string, opts: { passwordStdin?: boolean; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        let password: string | undefined;
        if (opts.passwordStdin) {
          if (process.stdin.isTTY)
            throw usageError("--password-stdin expects the password on a pipe");
          password = passwordFromStdin(await readStdin());
        }
        const r = await identityService(ctx).setPassword(name, password);
        if (opts.json)
          printJson({ name, ...(r.password !== undefined ? { password: r.password } : {}) });
        else if (r.password !== undefined)
          process.stdout.write(`New password for ${name}: ${r.password}   (shown once)\n`);
        else process.stdout.write(`Password of ${name} changed.\n`);
      }),
    );

  user
    .command("delete")
    .description("delete a user, their group memberships, backup codes and sessions")
    .argument("<name>", "user name")
    .action(async (name: string, _opts: unknown, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        await identityService(ctx).deleteUser(name);
        process.stdout.write(`User ${name} deleted.\n`);
      }),
    );

  user
    .command("unlock")
    .description("clear a user's sign-in lockout")
    .argument("<name>", "user name")
    .action(async (name: string, _opts: unknown, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        await identityService(ctx).unlock(name);
        process.stdout.write(`User ${name} is unlocked.\n`);
      }),
    );

  const mfa = program.command("mfa").description("manage second factors");
  mfa
    .command("reset")
    .description("give a user a new TOTP secret and backup codes (the old ones stop working)")
    .argument("<name>", "user name")
    .option("--no-qr", "do not print the QR code")
    .option("--json", "JSON output")
    .action(async (name: string, opts: { qr: boolean; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const e = await identityService(ctx).resetMfa(name);
        if (opts.json) {
          printJson({ name, ...enrolmentJson(e) });
          return;
        }
        process.stdout.write(
          `New authenticator for ${name}; the old secret and backup codes no longer work.\n`,
        );
        printTotpEnrolment({
          name,
          totpUri: e.totpUri,
          totpSecret: e.totpSecret,
          backupCodes: e.backupCodes,
          qr: opts.qr,
        });
      }),
    );
}
