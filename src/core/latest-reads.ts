/**
 * Keeps only the newest of overlapping store reads of one thing. Two refreshes of the
 * same user, device or grant can complete out of order (on PostgreSQL a pool runs them
 * on different connections), and the older answer — a group since removed, a device
 * since revoked — must not overwrite the newer one. A refresh asks `start(key)` before it
 * reads and applies its answer only while `isLatest()`; `supersede(key)` makes every
 * read of the key in flight stale (the thing was dropped from memory meanwhile).
 *
 * @example
 * const read = reads.start(id);
 * try { const row = await load(id); if (read.isLatest()) apply(row); } finally { read.done(); }
 */
export class LatestReads<K> {
  #seq = 0;
  readonly #latest = new Map<K, number>();

  start(key: K): { isLatest(): boolean; done(): void } {
    const n = ++this.#seq;
    this.#latest.set(key, n);
    return {
      isLatest: () => this.#latest.get(key) === n,
      done: () => {
        if (this.#latest.get(key) === n) this.#latest.delete(key);
      },
    };
  }

  /** Makes every read of `key` in flight stale. */
  supersede(key: K): void {
    if (this.#latest.has(key)) this.#latest.set(key, ++this.#seq);
  }
}
