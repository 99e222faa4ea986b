import { randomBytes, createHash, timingSafeEqual } from "node:crypto";

/** A random, URL-safe identifier with a readable prefix, e.g. `dec_3q…`. 128 bits of entropy. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(16).toString("base64url")}`;
}

/** A random secret token (256 bits), URL-safe. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Constant-time string comparison for secrets of possibly different lengths. */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}

/**
 * The base64url characters in ASCII order: a fixed-width number written with them sorts,
 * as text (SQLite BINARY, PostgreSQL "C"), in numeric order.
 */
const ORDERED_DIGITS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
const POOL_IDS = 1024;
let idPool = Buffer.alloc(0);
let idPoolNext = POOL_IDS;
let stampMs = -1;
let stamp = "";

/**
 * A time-ordered identifier for records written at a high rate (audit events, decisions):
 * `prefix_` + the time in ms (8 order-preserving characters) + 128 random bits (base64url,
 * from a pooled buffer: no getrandom call per id). Ids made later sort later (to the ms),
 * so indexed inserts land at the right edge of the B-tree instead of on a random page —
 * what keeps an ever-growing audit table's inserts cheap. The random part keeps the id
 * unguessable; the time it reveals is the record's own timestamp.
 */
export function timeOrderedId(prefix: string, nowMs: number): string {
  if (nowMs !== stampMs) {
    stampMs = nowMs;
    let s = "";
    let v = Math.max(0, Math.floor(nowMs));
    for (let i = 0; i < 8; i++) {
      s = ORDERED_DIGITS[v % 64]! + s;
      v = Math.floor(v / 64);
    }
    stamp = s;
  }
  if (idPoolNext === POOL_IDS) {
    idPool = randomBytes(16 * POOL_IDS);
    idPoolNext = 0;
  }
  const start = 16 * idPoolNext++;
  return `${prefix}_${stamp}${idPool.toString("base64url", start, start + 16)}`;
}
