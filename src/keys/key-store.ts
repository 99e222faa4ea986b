import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { SecretBox } from "../core/secret-box.js";
import { newId } from "../core/ids.js";
import { ZtError } from "../core/errors.js";

export type KeyAlg = "ES256" | "EdDSA";

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

  /** Public JWKs of every non-retired key for a purpose (for JWKS endpoints). */
  async publicJwks(purpose: string): Promise<Record<string, unknown>[]> {
    const rows = await this.#store.db
      .selectFrom("keys")
      .select(["public_jwk"])
      .where("purpose", "=", purpose)
      .where("status", "!=", "retired")
      .execute();
    return rows.map((r) => JSON.parse(r.public_jwk) as Record<string, unknown>);
  }

  async #create(purpose: string, alg: KeyAlg): Promise<SigningKey> {
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
    await this.#store.db
      .insertInto("keys")
      .values({
        id: kid,
        purpose,
        alg,
        public_jwk: JSON.stringify(jwk),
        private_sealed: this.#box.seal(`key:${purpose}`, pkcs8),
        created_at: createdAt,
        not_after: null,
        status: "active",
      })
      .execute();
    return {
      kid,
      alg,
      purpose,
      privateKey: pair.privateKey,
      publicKey: pair.publicKey,
      publicJwk: jwk,
      createdAt,
    };
  }

  #fromRow(row: {
    id: string;
    purpose: string;
    alg: string;
    public_jwk: string;
    private_sealed: string;
    created_at: number;
  }): SigningKey {
    const der = this.#box.open(`key:${row.purpose}`, row.private_sealed);
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
