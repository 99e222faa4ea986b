import { sql } from "kysely";
import { ZtError } from "../core/errors.js";
import type { SecretBox } from "../core/secret-box.js";
import type { Store } from "../store/index.js";
import { processesUsing } from "../store/sqlite-backup.js";
import { sealedPurpose } from "./sealed-purposes.js";

/** How many sealed secrets a rotation re-sealed, by kind. */
export interface ResealCounts {
  signing_keys: number;
  ca_keys: number;
  totp_secrets: number;
}

interface SealedRow {
  table: "keys" | "pki_cas" | "users";
  id: string;
  purpose: string;
  sealed: string;
  /** What it counts as in {@link ResealCounts}. */
  kind: keyof ResealCounts;
  /** Stores a new sealed value in its row. */
  write(db: Store["db"], sealed: string): Promise<unknown>;
}

/** Every sealed secret in the store, with the purpose it is sealed under. */
async function sealedRows(db: Store["db"]): Promise<SealedRow[]> {
  const keys = await db.selectFrom("keys").select(["id", "purpose", "private_sealed"]).execute();
  const cas = await db.selectFrom("pki_cas").select(["id", "private_sealed"]).execute();
  const users = await db
    .selectFrom("users")
    .select(["id", "totp_secret_sealed"])
    .where("totp_secret_sealed", "is not", null)
    .execute();
  return [
    ...keys.map((r): SealedRow => ({
      table: "keys",
      id: r.id,
      purpose: sealedPurpose.signingKey(r.purpose),
      sealed: r.private_sealed,
      kind: "signing_keys",
      write: (tx, v) =>
        tx.updateTable("keys").set({ private_sealed: v }).where("id", "=", r.id).execute(),
    })),
    ...cas.map((r): SealedRow => ({
      table: "pki_cas",
      id: r.id,
      purpose: sealedPurpose.ca(r.id),
      sealed: r.private_sealed,
      kind: "ca_keys",
      write: (tx, v) =>
        tx.updateTable("pki_cas").set({ private_sealed: v }).where("id", "=", r.id).execute(),
    })),
    ...users.map((r): SealedRow => ({
      table: "users",
      id: r.id,
      purpose: sealedPurpose.totp(r.id),
      sealed: r.totp_secret_sealed!,
      kind: "totp_secrets",
      write: (tx, v) =>
        tx.updateTable("users").set({ totp_secret_sealed: v }).where("id", "=", r.id).execute(),
    })),
  ];
}

/**
 * Which of the keys opens the store's sealed secrets: "old", "new", or undefined when
 * there is none to try. Throws when neither does (a third key, or damaged data).
 */
export async function sealedWith(
  store: Store,
  old: SecretBox,
  next: SecretBox,
): Promise<"old" | "new" | undefined> {
  const rows = await sealedRows(store.db);
  const first = rows[0];
  if (!first) return undefined;
  for (const [name, box] of [
    ["old", old],
    ["new", next],
  ] as const) {
    try {
      box.open(first.purpose, first.sealed);
      return name;
    } catch {
      /* try the other one */
    }
  }
  throw new ZtError(
    "ZT_KEY_DECRYPT_FAILED",
    `the store's sealed secrets open with neither the current master key nor the new one (${first.table} ${first.id})`,
  );
}

/**
 * Re-seals every secret in the store (signing keys, CA keys, TOTP secrets) from `old` to
 * `next` in one transaction: all or nothing. Each is opened with `old` (any that does not
 * open aborts the whole), sealed with `next`, and opened again with `next` before the
 * commit.
 */
export async function resealSecrets(
  store: Store,
  old: SecretBox,
  next: SecretBox,
): Promise<ResealCounts> {
  return store.db.transaction().execute(async (tx) => {
    const counts: ResealCounts = { signing_keys: 0, ca_keys: 0, totp_secrets: 0 };
    for (const row of await sealedRows(tx)) {
      let plain: Buffer;
      try {
        plain = old.open(row.purpose, row.sealed);
      } catch {
        throw new ZtError(
          "ZT_KEY_DECRYPT_FAILED",
          `${row.table} ${row.id} does not open with the current master key: nothing was changed`,
          { table: row.table, id: row.id },
        );
      }
      const sealed = next.seal(row.purpose, plain);
      if (!next.open(row.purpose, sealed).equals(plain))
        throw new ZtError("ZT_INTERNAL", `re-sealing ${row.table} ${row.id} did not round-trip`);
      await row.write(tx, sealed);
      counts[row.kind]++;
    }
    return counts;
  });
}

/**
 * Refuses the rotation while another process uses the store: a running zt holds the old
 * key in memory and would fail on every secret it reads afterwards. SQLite: any process
 * with the database open (from /proc). PostgreSQL: any other zt connection to the database
 * (`application_name` zt…; a replica's event listener stays connected while it runs).
 */
export async function assertStoreIdle(store: Store): Promise<void> {
  if (store.file) {
    const pids = processesUsing([store.file, `${store.file}-wal`]);
    if (pids.length > 0)
      throw new ZtError(
        "ZT_CONFLICT",
        `the database ${store.file} is open in process ${pids.join(", ")}: stop zt (and every zt command using this data directory) first`,
        { pids },
      );
    return;
  }
  const others = await sql<{ application_name: string; client_addr: string | null }>`
    SELECT application_name, host(client_addr) AS client_addr FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND application_name LIKE 'zt%'`.execute(store.db);
  if (others.rows.length > 0)
    throw new ZtError(
      "ZT_CONFLICT",
      `${others.rows.length} other zt connection(s) to ${store.location} (${[
        ...new Set(others.rows.map((r) => `${r.application_name}@${r.client_addr ?? "local"}`)),
      ].join(", ")}): stop every replica first`,
      { connections: others.rows.length },
    );
}
