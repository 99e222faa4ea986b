import type { Kysely } from "kysely";
import type { Tables } from "../../src/store/index.js";

/**
 * Holds the result of a read of one table (`selectFrom(table)…execute*()`) from its
 * caller while held: the query itself has run against the real store, and its connection
 * is free again (other queries, the event bus's among them, go on).
 */
export class ReadGate {
  readonly #table: string;
  #released: Promise<void> | undefined;
  #release: (() => void) | undefined;
  #heldOne: (() => void) | undefined;
  #held: Promise<void> = Promise.resolve();
  #taken = false;

  constructor(table: string) {
    this.#table = table;
  }

  /** Holds the next read of the table (one), until `release()`. */
  hold(): void {
    this.#taken = false;
    this.#released = new Promise((r) => (this.#release = r));
    this.#held = new Promise((r) => (this.#heldOne = r));
  }

  /** Resolves once a read has run and is being held. */
  held(): Promise<void> {
    return this.#held;
  }

  release(): void {
    this.#release?.();
    this.#released = undefined;
  }

  /** `db` whose reads of the table pass through this gate. */
  wrap(db: Kysely<Tables>): Kysely<Tables> {
    return new Proxy(db, {
      get: (target, prop) => {
        const v: unknown = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        if (prop !== "selectFrom") return (v as (...a: unknown[]) => unknown).bind(target);
        return (table: string) => {
          const b = (v as (t: string) => object).call(target, table);
          return table === this.#table ? this.#builder(b) : b;
        };
      },
    });
  }

  #builder<T extends object>(b: T): T {
    return new Proxy(b, {
      get: (target, prop) => {
        const v: unknown = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        const fn = v as (...a: unknown[]) => unknown;
        if (typeof prop === "string" && prop.startsWith("execute")) {
          return async (...a: unknown[]) => {
            const result = await fn.apply(target, a);
            const released = this.#released;
            if (released && !this.#taken) {
              this.#taken = true;
              this.#heldOne?.();
              await released;
            }
            return result;
          };
        }
        return (...a: unknown[]) => {
          const r = fn.apply(target, a);
          return r !== null && typeof r === "object" && "executeTakeFirst" in r
            ? this.#builder(r)
            : r;
        };
      },
    });
  }
}
