import { sql } from "kysely";
import type { Store } from "../store/index.js";
import { setActiveSessions, setBansActive, setCertificateExpiries, setSinkLag } from "./metrics.js";

const DAY_MS = 86_400_000;

/**
 * Refreshes the gauges that are facts about the store (live sessions, certificates by
 * days to expiry, sink lag, active bans). Run at scrape time, so the hot path never
 * pays for them. A table another capability has not created yet is skipped.
 */
export async function collectStoreMetrics(store: Store, nowMs: number): Promise<void> {
  await Promise.all([
    quiet(async () => {
      const r = await store.db
        .selectFrom("sessions")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("revoked_at", "is", null)
        .where("expires_at", ">", nowMs)
        .executeTakeFirst();
      setActiveSessions(Number(r?.n ?? 0));
    }),
    quiet(async () => {
      const rows = await sql<{
        not_after: number;
      }>`SELECT not_after FROM pki_certs WHERE revoked_at IS NULL AND not_after > ${nowMs}`.execute(
        store.db,
      );
      setCertificateExpiries(
        "svid",
        rows.rows.map((r) => (Number(r.not_after) - nowMs) / DAY_MS),
      );
    }),
    quiet(async () => {
      const rows = await sql<{
        kind: string;
        not_after: number;
      }>`SELECT kind, not_after FROM pki_cas WHERE status = 'active'`.execute(store.db);
      const byKind = new Map<string, number[]>();
      for (const r of rows.rows) {
        const list = byKind.get(`ca-${r.kind}`) ?? [];
        list.push((Number(r.not_after) - nowMs) / DAY_MS);
        byKind.set(`ca-${r.kind}`, list);
      }
      for (const [kind, days] of byKind) setCertificateExpiries(kind, days);
    }),
    quiet(async () => {
      const head = await store.db
        .selectFrom("audit_events")
        .select((eb) => eb.fn.max("seq").as("m"))
        .executeTakeFirst();
      const headSeq = Number(head?.m ?? 0);
      const cursors = await store.db.selectFrom("audit_cursors").select(["name", "seq"]).execute();
      for (const c of cursors) setSinkLag(c.name, Math.max(0, headSeq - Number(c.seq)));
    }),
    quiet(async () => {
      const r = await store.db
        .selectFrom("audit_bans")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("lifted_at", "is", null)
        .where("until", ">", nowMs)
        .executeTakeFirst();
      setBansActive(Number(r?.n ?? 0));
    }),
  ]);
}

/**
 * `collectStoreMetrics` at most once per `everyMs` (by the `nowMs` it is given): scrapes
 * in between share the last run. `/metrics` may be open to anyone who reaches the API
 * (no `audit.metrics_token_file`), and each run reads the store, certificates included.
 */
export function throttledStoreMetrics(
  store: Store,
  everyMs = 5_000,
): (nowMs: number) => Promise<void> {
  let last: { at: number; run: Promise<void> } | undefined;
  return (nowMs) => {
    if (last && nowMs >= last.at && nowMs - last.at < everyMs) return last.run;
    last = { at: nowMs, run: collectStoreMetrics(store, nowMs) };
    return last.run;
  };
}

async function quiet(f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } catch {
    /* table missing or store briefly unavailable: keep the last value */
  }
}
