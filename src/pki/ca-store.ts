import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  X509Certificate,
  type KeyObject,
} from "node:crypto";
import type { Kysely } from "kysely";
import type { PkiCasTable, Store, Tables } from "../store/index.js";
import type { SecretBox } from "../core/secret-box.js";
import type { Clock } from "../core/clock.js";
import { newId } from "../core/ids.js";
import { ZtError } from "../core/errors.js";
import { x509, subtle } from "./x509-lib.js";
import {
  buildIntermediateCert,
  buildRootCert,
  EC_P256_KEYGEN,
  keyIdentifier,
  randomSerialHex,
  type SigningCa,
} from "./x509-build.js";
import { ed25519PublicBlob, sshKeyLine } from "./ssh/ssh-key.js";
import { readDerChildren } from "./der.js";
import type { FastIssuer } from "./svid-der.js";
import type { PkiSettings } from "./pki-config.js";
import { withCaLock } from "./ca-lock.js";
import { sealedPurpose } from "../keys/sealed-purposes.js";

export type X509CaKind = "root" | "intermediate";
export type SshCaKind = "ssh-user" | "ssh-host";

/** An X.509 CA as loaded: able to sign, plus a node:crypto view for fast verification. */
export interface X509Ca extends SigningCa {
  /** For the hand-written issuance path (svid-der.ts). */
  fast: FastIssuer;
  kind: X509CaKind;
  parentId: string | null;
  status: "active" | "retired";
  pem: string;
  node: X509Certificate;
}

export interface SshCaKey {
  id: string;
  kind: SshCaKind;
  privateKey: KeyObject;
  publicBlob: Buffer;
  /** `ssh-ed25519 AAAA… zt-user-ca` */
  publicLine: string;
  status: "active" | "retired";
}

export interface CaSet {
  roots: X509Ca[];
  intermediates: X509Ca[];
  /** The intermediate that signs new SVIDs and the CRL. */
  activeIntermediate: X509Ca;
  sshUser: SshCaKey;
  sshHost: SshCaKey;
}

/** What {@link CaStore.rotateIntermediate} did. */
export interface IntermediateRotationResult {
  rotated: boolean;
  /** The active intermediate afterwards. */
  id: string;
  notAfterMs: number;
  /** The active intermediate it retired, if there was one. */
  previousId: string | null;
  /**
   * Why nothing was made: the active intermediate has enough time left, or a new one
   * could not outlive it (it would end with the root CA too).
   */
  skipped?: "not-due" | "root-expiring";
}

export interface RotateIntermediateOptions {
  /**
   * Rotate only if the active intermediate has less than this left (or there is none).
   * Left out: rotate unconditionally, as `zt ca rotate-intermediate` does.
   */
  ifExpiresWithinMs?: number;
}

type CaDb = Kysely<Tables>;
type CaInsert = PkiCasTable;

const BACKDATE_MS = 60_000;
const purpose = sealedPurpose.ca;

/**
 * CA key material in the store: certificates in clear, private keys sealed with the
 * master key (AES-256-GCM, purpose-bound), so every replica signs with the same CAs.
 */
export class CaStore {
  readonly #store: Store;
  readonly #box: SecretBox;
  readonly #clock: Clock;
  readonly #settings: PkiSettings;

  constructor(store: Store, box: SecretBox, clock: Clock, settings: PkiSettings) {
    this.#store = store;
    this.#box = box;
    this.#clock = clock;
    this.#settings = settings;
  }

  /** Creates whatever is missing (root, intermediate, SSH user and host CAs). Idempotent. */
  async ensure(): Promise<string[]> {
    const created: string[] = [];
    const now = this.#clock.now();
    // Replicas may run this at the same time. Every step is "the oldest active row wins";
    // repeat until the root and an intermediate under it are both settled.
    for (let round = 0; round < 10; round++) {
      let root = await this.#activeRow("root", now);
      if (!root) {
        await this.#createRoot();
        created.push("root");
        root = await this.#winner("root", now);
        continue;
      }
      // An active intermediate under another (losing) root is never trusted.
      await this.#store.db
        .updateTable("pki_cas")
        .set({ status: "discarded" })
        .where("kind", "=", "intermediate")
        .where("status", "=", "active")
        .where("parent_id", "!=", root.id)
        .execute();
      if (!(await this.#activeRow("intermediate", now))) {
        // Under the CA lock: of replicas starting together, one makes it, the others see it.
        try {
          const r = await this.rotateIntermediate({ ifExpiresWithinMs: 0 });
          if (r.rotated) created.push("intermediate");
        } catch (e) {
          // Another replica's root won meanwhile: settle again.
          if (!(e instanceof ZtError) || e.code !== "ZT_CONFLICT") throw e;
        }
        continue;
      }
      const settled = await this.#activeRow("root", now);
      if (settled?.id === root.id) break;
    }
    for (const kind of ["ssh-user", "ssh-host"] as const) {
      if (!(await this.#activeRow(kind, now))) {
        await this.#createSsh(kind);
        created.push(kind);
        await this.#winner(kind, now);
      }
    }
    return created;
  }

  /** Loads every unexpired CA. Throws ZT_PKI_NOT_INITIALISED when `zt init` has not run. */
  async load(): Promise<CaSet> {
    const now = this.#clock.now();
    const rows = await this.#store.db
      .selectFrom("pki_cas")
      .selectAll()
      .where("not_after", ">", now)
      .where("status", "!=", "discarded")
      .orderBy("created_at", "asc")
      .orderBy("id", "asc")
      .execute();
    const roots: X509Ca[] = [];
    const intermediates: X509Ca[] = [];
    let sshUser: SshCaKey | undefined;
    let sshHost: SshCaKey | undefined;
    for (const row of rows) {
      if (row.kind === "root" || row.kind === "intermediate") {
        const ca = await this.#loadX509(row);
        (row.kind === "root" ? roots : intermediates).push(ca);
      } else if (row.status === "active" && (row.kind === "ssh-user" || row.kind === "ssh-host")) {
        const key = this.#loadSsh(row);
        if (row.kind === "ssh-user") sshUser ??= key;
        else sshHost ??= key;
      }
    }
    // Only intermediates that chain to a trusted root are kept.
    const chained = intermediates.filter((i) =>
      roots.some((r) => i.node.checkIssued(r.node) && i.node.verify(r.node.publicKey)),
    );
    const active = chained.find((i) => i.status === "active");
    if (roots.length > 0 && !active && sshUser && sshHost) {
      throw new ZtError(
        "ZT_PKI_NOT_INITIALISED",
        "the PKI has no valid intermediate CA (the last one expired?): run `zt init`, which creates one",
      );
    }
    if (roots.length === 0 || !active || !sshUser || !sshHost) {
      throw new ZtError(
        "ZT_PKI_NOT_INITIALISED",
        "the PKI has no CA yet: run `zt init` (or `zt ca init`)",
      );
    }
    return { roots, intermediates: chained, activeIntermediate: active, sshUser, sshHost };
  }

  /**
   * Makes a new active intermediate and retires the old one, which stays trusted (never
   * discarded: it may have signed SVIDs) until it expires. The decision and the switch
   * happen under the CA lock (`withCaLock`) on a fresh read, so replicas that all decide
   * to rotate at once produce exactly one new intermediate, and concurrent manual
   * rotations leave exactly one active.
   *
   * @example await caStore.rotateIntermediate({ ifExpiresWithinMs: 120 * DAY }) // only when due
   */
  async rotateIntermediate(
    options: RotateIntermediateOptions = {},
  ): Promise<IntermediateRotationResult> {
    const within = options.ifExpiresWithinMs;
    // A first look without the lock, so replicas with nothing to do make no key.
    if (within !== undefined) {
      const skip = await this.#rotationSkip(this.#store.db, within);
      if (skip) return skip;
    }
    const root = await this.#activeRow("root", this.#clock.now());
    if (!root) throw new ZtError("ZT_PKI_NOT_INITIALISED", "no root CA: run `zt init`");
    // Key and certificate are made outside the lock, to hold it only for a few statements.
    const candidate = await this.#newIntermediateRow(await this.#loadX509(root));
    return withCaLock(this.#store, async (db) => {
      const now = this.#clock.now();
      const currentRoot = await this.#activeRow("root", now, db);
      if (currentRoot?.id !== root.id) {
        throw new ZtError("ZT_CONFLICT", "the root CA changed during the rotation: try again");
      }
      if (within !== undefined) {
        const skip = await this.#rotationSkip(db, within);
        if (skip) return skip;
      }
      const previous = await this.#activeRow("intermediate", now, db);
      await db.insertInto("pki_cas").values(candidate).execute();
      await db
        .updateTable("pki_cas")
        .set({ status: "retired" })
        .where("kind", "=", "intermediate")
        .where("status", "=", "active")
        .where("id", "!=", candidate.id)
        .execute();
      return {
        rotated: true,
        id: candidate.id,
        notAfterMs: candidate.not_after,
        previousId: previous?.id ?? null,
      };
    });
  }

  /** The active intermediate as the store has it now (undefined: none, or it expired). */
  async activeIntermediate(): Promise<{ id: string; notAfterMs: number } | undefined> {
    const row = await this.#activeRow("intermediate", this.#clock.now());
    return row && { id: row.id, notAfterMs: Number(row.not_after) };
  }

  /** Why a rotation "when due" has nothing to do, or undefined when it has. */
  async #rotationSkip(db: CaDb, withinMs: number): Promise<IntermediateRotationResult | undefined> {
    const now = this.#clock.now();
    const active = await this.#activeRow("intermediate", now, db);
    if (!active) return undefined;
    const notAfterMs = Number(active.not_after);
    const result = { rotated: false, id: active.id, notAfterMs, previousId: null };
    if (notAfterMs - now >= withinMs) return { ...result, skipped: "not-due" };
    // An intermediate never outlives its root: once the root ends first, a new one
    // would be due at once, and the next, for ever.
    const root = await this.#activeRow("root", now, db);
    if (!root) return undefined; // the rotation reports it
    const reachable = Math.min(now + this.#settings.intermediateTtlMs, Number(root.not_after));
    return reachable <= notAfterMs ? { ...result, skipped: "root-expiring" } : undefined;
  }

  async #activeRow(kind: string, now: number, db: CaDb = this.#store.db) {
    return db
      .selectFrom("pki_cas")
      .selectAll()
      .where("kind", "=", kind)
      .where("status", "=", "active")
      .where("not_after", ">", now)
      .orderBy("created_at", "asc")
      .orderBy("id", "asc")
      .executeTakeFirst();
  }

  /** Another replica may have created one at the same time: the oldest wins, the rest retire. */
  async #winner(kind: string, now: number) {
    const winner = await this.#activeRow(kind, now);
    if (winner) {
      await this.#store.db
        .updateTable("pki_cas")
        // A race loser never signed anything: drop it from trust altogether.
        .set({ status: "discarded" })
        .where("kind", "=", kind)
        .where("status", "=", "active")
        .where("id", "!=", winner.id)
        .execute();
    }
    return winner;
  }

  async #createRoot(): Promise<string> {
    const keys = (await subtle.generateKey(EC_P256_KEYGEN, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPairLike;
    const spki = Buffer.from(await subtle.exportKey("spki", keys.publicKey));
    const now = this.#clock.now();
    const cert = await buildRootCert(
      {
        subject: `CN=zt root CA,OU=${this.#settings.trustDomain},O=zt`,
        serial: randomSerialHex(),
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + this.#settings.rootTtlMs),
        spki,
      },
      keys,
    );
    return this.#insertX509("root", null, cert, keys.privateKey);
  }

  /** A new intermediate under `root`, as the row to insert (key sealed). */
  async #newIntermediateRow(root: X509Ca): Promise<CaInsert> {
    const keys = (await subtle.generateKey(EC_P256_KEYGEN, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPairLike;
    const spki = Buffer.from(await subtle.exportKey("spki", keys.publicKey));
    const now = this.#clock.now();
    const notAfter = Math.min(now + this.#settings.intermediateTtlMs, root.notAfterMs);
    const cert = await buildIntermediateCert(
      {
        subject: `CN=zt intermediate CA ${new Date(now).toISOString().slice(0, 10)},OU=${this.#settings.trustDomain},O=zt`,
        serial: randomSerialHex(),
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(notAfter),
        spki,
        pathLength: 0,
      },
      keys.publicKey,
      root,
    );
    return this.#x509Row("intermediate", root.id, cert, keys.privateKey);
  }

  async #insertX509(
    kind: X509CaKind,
    parentId: string | null,
    cert: x509.X509Certificate,
    key: CryptoKeyLike,
  ): Promise<string> {
    const row = await this.#x509Row(kind, parentId, cert, key);
    await this.#store.db.insertInto("pki_cas").values(row).execute();
    return row.id;
  }

  async #x509Row(
    kind: X509CaKind,
    parentId: string | null,
    cert: x509.X509Certificate,
    key: CryptoKeyLike,
  ): Promise<CaInsert> {
    const id = newId(kind === "root" ? "ca_root" : "ca_int");
    const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", key));
    const row = {
      id,
      kind,
      cert: cert.toString("pem"),
      private_sealed: this.#box.seal(purpose(id), pkcs8),
      parent_id: parentId,
      created_at: this.#clock.now(),
      not_after: cert.notAfter.getTime(),
      status: "active",
    };
    pkcs8.fill(0);
    return row;
  }

  async #createSsh(kind: SshCaKind): Promise<string> {
    const pair = generateKeyPairSync("ed25519");
    const id = newId(kind === "ssh-user" ? "ca_sshu" : "ca_sshh");
    const line = sshKeyLine(
      ed25519PublicBlob(pair.publicKey),
      kind === "ssh-user" ? "zt-user-ca" : "zt-host-ca",
    );
    const pkcs8 = pair.privateKey.export({ format: "der", type: "pkcs8" });
    await this.#store.db
      .insertInto("pki_cas")
      .values({
        id,
        kind,
        cert: line,
        private_sealed: this.#box.seal(purpose(id), pkcs8),
        parent_id: null,
        created_at: this.#clock.now(),
        // SSH CA keys do not expire by themselves; rotation retires them.
        not_after: Number.MAX_SAFE_INTEGER,
        status: "active",
      })
      .execute();
    return id;
  }

  async #loadX509(row: CaRow): Promise<X509Ca> {
    const pkcs8 = this.#box.open(purpose(row.id), row.private_sealed);
    const signingKey = await subtle.importKey("pkcs8", pkcs8, EC_P256_KEYGEN, false, ["sign"]);
    const privateKey = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
    pkcs8.fill(0);
    const cert = new x509.X509Certificate(row.cert);
    const der = Buffer.from(cert.rawData);
    const keyId = keyIdentifier(Buffer.from(cert.publicKey.rawData));
    // TBSCertificate field 6 (index 5) is the subject: issued certificates copy it verbatim as issuer.
    const tbs = readDerChildren(readDerChildren(der)[0]!.content)[0]!;
    const subjectDer = Buffer.from(readDerChildren(tbs.content)[5]!.whole);
    return {
      id: row.id,
      kind: row.kind as X509CaKind,
      parentId: row.parent_id,
      status: row.status === "active" ? "active" : "retired",
      cert,
      der,
      pem: row.cert,
      node: new X509Certificate(der),
      signingKey,
      keyId,
      notAfterMs: cert.notAfter.getTime(),
      fast: { subjectDer, keyId, privateKey },
    };
  }

  #loadSsh(row: CaRow): SshCaKey {
    const der = this.#box.open(purpose(row.id), row.private_sealed);
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    der.fill(0);
    const publicBlob = ed25519PublicBlob(createPublicKey(privateKey));
    return {
      id: row.id,
      kind: row.kind as SshCaKind,
      privateKey,
      publicBlob,
      publicLine: row.cert,
      status: row.status === "active" ? "active" : "retired",
    };
  }
}

type CryptoKeyLike = import("node:crypto").webcrypto.CryptoKey;
type CryptoKeyPairLike = import("node:crypto").webcrypto.CryptoKeyPair;

interface CaRow {
  id: string;
  kind: string;
  cert: string;
  private_sealed: string;
  parent_id: string | null;
  status: string;
}
