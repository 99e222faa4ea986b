import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { withStoreLock, type Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { SecretBox } from "../core/secret-box.js";
import { newId } from "../core/ids.js";
import { ZtError } from "../core/errors.js";
import { sealedPurpose } from "./sealed-purposes.js";

export type KeyAlg = "ES256" | "EdDSA";

/** The store lock (PostgreSQL advisory key) a rotation holds: one rotation at a time. */
export const KEYS_LOCK_KEY = 0x7a742d6b657973n;

/**
 * A key's life: `active` signs; `previous` (rotated out) and `superseded` (lost a
 * creation race) no longer sign but stay published until `not_after` (none: for ever);
 * `retired` is neither used nor published.
 */
export type KeyStatus = "active" | "previous" | "superseded" | "retired";

/** What `zt keys list` shows of a key: never its private half. */
export interface KeyInfo {
  kid: string;
  purpose: string;
  alg: string;
  status: string;
  createdAt: number;
  /** Published in the JWKS until then (ms); null: while not retired. */
  publishedUntil: number | null;
}

export interface RotateKeyOptions {
  /**
   * How long the keys rotated out stay published (ms), so that verifiers still accept
   * what they signed until it expires. 0: retire them at once (a key believed leaked).
   */
  publishPreviousForMs: number;
}

export interface RotateKeyResult {
  kid: string;
  /** The keys that were active and no longer sign. */
  previous: string[];
}

export interface SigningKey {
  kid: string;
  alg: KeyAlg;
  purpose: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicJwk: Record<string, unknown>;
  createdAt: number;
}

/**
 * Signing keys kept in the store, private halves sealed with the master key, so every
 * replica sharing the database signs with the same keys.
 */
export class KeyStore {
  readonly #store: Store;
  readonly #box: SecretBox;
  readonly #clock: Clock;
  readonly #cache = new Map<string, SigningKey>();

  constructor(store: Store, box: SecretBox, clock: Clock) {
    this.#store = store;
    this.#box = box;
    this.#clock = clock;
  }

  /**
   * The active key for a purpose, created on first use. Replicas creating the first key
   * at the same moment settle on one: the oldest active row (then the smallest id), the
   * same order every later reader uses; the others are marked `superseded`.
   */
  async activeKey(purpose: string, alg: KeyAlg): Promise<SigningKey> {
    const cached = this.#cache.get(purpose);
    if (cached) return cached;
    const row = await this.#oldestActive(purpose);
    if (row) {
      const key = this.#fromRow(row);
      this.#cache.set(purpose, key);
      return key;
    }
    const created = await this.#create(purpose, alg);
    const winner = await this.#oldestActive(purpose);
    if (!winner) throw new ZtError("ZT_STORE", `signing key for ${purpose} vanished`);
    // A loser is never picked again. It stays published (publicJwks lists every key not
    // retired) in case a reader took it during the race and signed with it.
    await this.#store.db
      .updateTable("keys")
      .set({ status: "superseded" })
      .where("purpose", "=", purpose)
      .where("status", "=", "active")
      .where("id", "!=", winner.id)
      .execute();
    const key = winner.id === created.kid ? created : this.#fromRow(winner);
    this.#cache.set(purpose, key);
    return key;
  }

  #oldestActive(purpose: string) {
    return this.#store.db
      .selectFrom("keys")
      .selectAll()
      .where("purpose", "=", purpose)
      .where("status", "=", "active")
      .orderBy("created_at", "asc")
      .orderBy("id", "asc")
      .executeTakeFirst();
  }

  /**
   * Public JWKs of every key for a purpose that is published: not retired and, for a
   * key rotated out, within its publication window (for JWKS endpoints).
   */
  async publicJwks(purpose: string): Promise<Record<string, unknown>[]> {
    const now = this.#clock.now();
    const rows = await this.#store.db
      .selectFrom("keys")
      .select(["public_jwk"])
      .where("purpose", "=", purpose)
      .where("status", "!=", "retired")
      .where((eb) => eb.or([eb("not_after", "is", null), eb("not_after", ">", now)]))
      .orderBy("created_at", "desc")
      .execute();
    return rows.map((r) => JSON.parse(r.public_jwk) as Record<string, unknown>);
  }

  async #create(purpose: string, alg: KeyAlg): Promise<SigningKey> {
    const { key, row } = this.#newKey(purpose, alg);
    await this.#store.db.insertInto("keys").values(row).execute();
    return key;
  }

  #newKey(purpose: string, alg: KeyAlg) {
    const pair =
      alg === "ES256"
        ? generateKeyPairSync("ec", { namedCurve: "P-256" })
        : generateKeyPairSync("ed25519");
    const kid = newId("key");
    const jwk = { ...pair.publicKey.export({ format: "jwk" }), kid, alg, use: "sig" } as Record<
      string,
      unknown
    >;
    const pkcs8 = pair.privateKey.export({ format: "der", type: "pkcs8" });
    const createdAt = this.#clock.now();
    const row = {
      id: kid,
      purpose,
      alg,
      public_jwk: JSON.stringify(jwk),
      private_sealed: this.#box.seal(sealedPurpose.signingKey(purpose), pkcs8),
      created_at: createdAt,
      not_after: null,
      status: "active" satisfies KeyStatus,
    };
    const key: SigningKey = {
      kid,
      alg,
      purpose,
      privateKey: pair.privateKey,
      publicKey: pair.publicKey,
      publicJwk: jwk,
      createdAt,
    };
    return { key, row };
  }

  /**
   * Replaces the active key of a purpose with a new one, in one step under the store
   * lock: every key that was active stops signing and stays published for
   * `publishPreviousForMs` (0: retired at once). Other processes keep their cached key
   * until they hear of the rotation: publish an event and call `forget` on it.
   */
  async rotate(purpose: string, alg: KeyAlg, o: RotateKeyOptions): Promise<RotateKeyResult> {
    if (!Number.isSafeInteger(o.publishPreviousForMs) || o.publishPreviousForMs < 0) {
      throw new ZtError(
        "ZT_USAGE",
        `publication window must be a whole number of ms >= 0, got ${o.publishPreviousForMs}`,
      );
    }
    const { key, row } = this.#newKey(purpose, alg);
    const previous = await withStoreLock(this.#store, KEYS_LOCK_KEY, async (db) => {
      const active = await db
        .selectFrom("keys")
        .select("id")
        .where("purpose", "=", purpose)
        .where("status", "=", "active")
        .execute();
      const now = this.#clock.now();
      if (active.length > 0) {
        await db
          .updateTable("keys")
          .set(
            o.publishPreviousForMs > 0
              ? { status: "previous" satisfies KeyStatus, not_after: now + o.publishPreviousForMs }
              : { status: "retired" satisfies KeyStatus, not_after: now },
          )
          .where("purpose", "=", purpose)
          .where("status", "=", "active")
          .execute();
      }
      await db.insertInto("keys").values(row).execute();
      return active.map((r) => r.id);
    });
    this.#cache.set(purpose, key);
    return { kid: key.kid, previous };
  }

  /** Drops the cached active key of a purpose: the next use reads the store. */
  forget(purpose: string): void {
    this.#cache.delete(purpose);
  }

  /** Every key, newest first (no private halves). */
  async list(): Promise<KeyInfo[]> {
    const rows = await this.#store.db
      .selectFrom("keys")
      .select(["id", "purpose", "alg", "status", "created_at", "not_after"])
      .orderBy("purpose")
      .orderBy("created_at", "desc")
      .execute();
    return rows.map((r) => ({
      kid: r.id,
      purpose: r.purpose,
      alg: r.alg,
      status: r.status,
      createdAt: Number(r.created_at),
      publishedUntil:
        r.status === "retired"
          ? Number(r.not_after ?? r.created_at)
          : r.not_after === null
            ? null
            : Number(r.not_after),
    }));
  }

  #fromRow(row: {
    id: string;
    purpose: string;
    alg: string;
    public_jwk: string;
    private_sealed: string;
    created_at: number;
  }): SigningKey {
    const der = this.#box.open(sealedPurpose.signingKey(row.purpose), row.private_sealed);
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    return {
      kid: row.id,
      alg: row.alg as KeyAlg,
      purpose: row.purpose,
      privateKey,
      publicKey: createPublicKey(privateKey),
      publicJwk: JSON.parse(row.public_jwk) as Record<string, unknown>,
      createdAt: Number(row.created_at),
    };
  }
}
