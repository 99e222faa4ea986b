import type { Store } from "../store/index.js";
import { queryAudit } from "./audit-query.js";
import type { AuditRowChained } from "./audit-log.js";

/**
 * A consumer's durable position in the audit log (`audit_cursors`). The audit table is
 * the spool: a consumer that stops or falls behind loses nothing, it reads on from its
 * cursor. Commits are compare-and-set, so when several replicas run the same consumer
 * exactly one of them delivers each batch.
 */
export class AuditCursor {
  readonly #store: Store;
  readonly name: string;
  #seq: number | undefined;

  constructor(store: Store, name: string) {
    this.#store = store;
    this.name = name;
  }

  /** The position (last seq handled); a new cursor starts at `initial()` (e.g. the head). */
  async position(initial: () => Promise<number>, nowMs: number): Promise<number> {
    if (this.#seq !== undefined) return this.#seq;
    const row = await this.#store.db
      .selectFrom("audit_cursors")
      .select("seq")
      .where("name", "=", this.name)
      .executeTakeFirst();
    if (row) this.#seq = Number(row.seq);
    else {
      const start = await initial();
      await this.#store.db
        .insertInto("audit_cursors")
        .values({ name: this.name, seq: start, dropped: 0, updated_at: nowMs })
        .onConflict((oc) => oc.column("name").doNothing())
        .execute();
      const again = await this.#store.db
        .selectFrom("audit_cursors")
        .select("seq")
        .where("name", "=", this.name)
        .executeTakeFirstOrThrow();
      this.#seq = Number(again.seq);
    }
    return this.#seq;
  }

  /** Up to `limit` events after the cursor. */
  async read(limit: number): Promise<AuditRowChained[]> {
    if (this.#seq === undefined) throw new Error("cursor not positioned");
    return queryAudit(this.#store, { afterSeq: this.#seq, limit });
  }

  /**
   * Moves the cursor from its current position to `seq` (adding `dropped` to the
   * skipped count). Returns false when another process moved it first; the cursor then
   * re-reads its position.
   */
  async commit(seq: number, nowMs: number, dropped = 0): Promise<boolean> {
    const from = this.#seq;
    if (from === undefined) throw new Error("cursor not positioned");
    const res = await this.#store.db
      .updateTable("audit_cursors")
      .set((eb) => ({ seq, updated_at: nowMs, dropped: eb("dropped", "+", dropped) }))
      .where("name", "=", this.name)
      .where("seq", "=", from)
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) === 1) {
      this.#seq = seq;
      return true;
    }
    this.#seq = undefined;
    return false;
  }
}

export async function headSeq(store: Store): Promise<number> {
  const r = await store.db
    .selectFrom("audit_events")
    .select((eb) => eb.fn.max("seq").as("m"))
    .executeTakeFirst();
  return Number(r?.m ?? 0);
}
