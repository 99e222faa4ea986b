import { renameSync } from "node:fs";
import { dirname } from "node:path";
import type { Command } from "commander";
import {
  auditAfter,
  loadCliConfig,
  printJson,
  printTable,
  usageError,
  withContext,
  withoutContext,
} from "../cli-context.js";
import { ZtError } from "../../core/errors.js";
import { fileExists, syncDirectory, writePrivateFile } from "../../core/secure-files.js";
import { SecretBox } from "../../core/secret-box.js";
import { openStore } from "../../store/index.js";
import {
  assertStoreIdle,
  loadMasterKey,
  masterKeyFile,
  newMasterKeyText,
  pendingMasterKeyFile,
  readMasterKeyFile,
  resealSecrets,
  sealedWith,
  type ResealCounts,
} from "../../keys/index.js";
import { parseDuration } from "../../core/duration.js";
import {
  ASSERTION_KEY_PREVIOUS_PUBLISHED_MS,
  ASSERTION_KEY_PURPOSE,
  rotateAssertionKey,
} from "../../proxy/index.js";

const actor = () => `cli:${process.env["USER"] ?? "unknown"}`;

/** The longest a rotated-out assertion key stays published. */
const MAX_KEEP_PREVIOUS_MS = 24 * 60 * 60 * 1000;

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
  registerRotateMaster(keys);
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
          // Both given: one would be dropped without a word (the old key kept, or not).
          if (opts.retireNow && cmd.getOptionValueSource("keepPrevious") === "cli")
            throw usageError("give --keep-previous or --retire-now, not both");
          let keepMs = ASSERTION_KEY_PREVIOUS_PUBLISHED_MS;
          if (opts.retireNow) keepMs = 0;
          else {
            try {
              keepMs = parseDuration(opts.keepPrevious, "--keep-previous");
            } catch (e) {
              throw usageError((e as Error).message);
            }
            // What the old key signed lives 60 s; publishing it for longer than a day only
            // stretches the life of a key that may have leaked.
            if (keepMs > MAX_KEEP_PREVIOUS_MS)
              throw usageError(
                `--keep-previous: at most 24h (what the old key signed lives 60 s), got ${JSON.stringify(opts.keepPrevious)}`,
              );
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

/**
 * `zt keys rotate-master`: every sealed secret (signing keys, CA keys, TOTP secrets)
 * re-sealed under a new master key, in one transaction, with zt stopped. With a key file
 * the new key waits in `<file>.next` until the store is re-sealed, then takes the file's
 * name; a rotation cut short is finished by running the command again (zt refuses to start
 * meanwhile). With ZT_MASTER_KEY the new key is written to `--new-key-out`, for the
 * operator to put where ZT_MASTER_KEY comes from.
 */
function registerRotateMaster(keys: Command): void {
  keys
    .command("rotate-master")
    .description("re-seal every stored secret under a new master key (zt stopped on every replica)")
    .option(
      "--new-key-out <file>",
      "with ZT_MASTER_KEY: where to write the new key (0600); required then",
    )
    .option("--json", "JSON output")
    .action(async (opts: { newKeyOut?: string; json?: boolean }, cmd: Command) =>
      withoutContext(async () => {
        const config = loadCliConfig(cmd);
        const envKey = process.env["ZT_MASTER_KEY"];
        const keyOptions = {
          dataDir: config.data_dir,
          masterKeyFile: config.master_key_file,
          envValue: envKey,
        };
        if (envKey && !opts.newKeyOut)
          throw usageError(
            "ZT_MASTER_KEY holds the master key: pass --new-key-out FILE, where the new key is written for you to put in its place",
          );
        if (!envKey && opts.newKeyOut)
          throw usageError(
            `--new-key-out is for a master key given in ZT_MASTER_KEY; the new key replaces ${masterKeyFile(keyOptions)}`,
          );
        const old = loadMasterKey({ ...keyOptions, rotating: true });
        const store = await openStore({
          dataDir: config.data_dir,
          databaseUrl: config.database_url,
          poolSize: 1,
          create: false,
        });
        let counts: ResealCounts;
        let newKeyAt: string;
        try {
          await assertStoreIdle(store);
          let next: SecretBox;
          if (envKey) {
            newKeyAt = opts.newKeyOut!;
            if (fileExists(newKeyAt))
              throw new ZtError(
                "ZT_CONFLICT",
                `${newKeyAt} exists; the new key is never written over a file (remove it if it holds no key in use)`,
                { path: newKeyAt },
              );
            const text = newMasterKeyText();
            writePrivateFile(newKeyAt, text); // before the store changes: never lost
            next = readMasterKeyFile(newKeyAt);
          } else {
            newKeyAt = masterKeyFile(keyOptions);
            const pending = pendingMasterKeyFile(newKeyAt);
            if (!fileExists(pending)) writePrivateFile(pending, newMasterKeyText());
            next = readMasterKeyFile(pending);
          }
          const state = await sealedWith(store, old, next);
          counts =
            state === "new"
              ? { signing_keys: 0, ca_keys: 0, totp_secrets: 0 } // done before a cut
              : await resealSecrets(store, old, next);
          if (!envKey) {
            renameSync(pendingMasterKeyFile(newKeyAt), newKeyAt);
            syncDirectory(dirname(newKeyAt));
          }
        } finally {
          await store.close();
        }
        await auditAfter(config, {
          kind: "keys.rotate-master",
          outcome: "success",
          subject: actor(),
          data: { ...counts },
        });
        if (opts.json) return printJson({ ...counts, new_key: newKeyAt });
        process.stdout.write(
          `re-sealed ${counts.signing_keys} signing key(s), ${counts.ca_keys} CA key(s) and ${counts.totp_secrets} TOTP secret(s) under the new master key, now in ${newKeyAt}\n` +
            (envKey
              ? "Put it where ZT_MASTER_KEY comes from, on every replica, before starting zt; then delete that file.\n"
              : "") +
            "Backups taken before now still need the old master key.\n",
        );
      }),
    );
}
