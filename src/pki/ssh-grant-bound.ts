import { hostGroupOfKey, sshGrantContext, type ActiveGrant } from "../access/index.js";

/** The grant facts an `ssh:sign` decision sees (`context.grants`, `context.breakglass`). */
export interface SshGrantFacts {
  grants: string[];
  breakglass: boolean;
}

export interface GrantBound {
  /** When the permission ends: the expiry of the grant whose end turns the decision. */
  until: number;
  /** The grant ending then (the one the decision relied on last). */
  grant: ActiveGrant;
  /**
   * Every grant the decision's facts were made of, `grant` first, then by expiry: the
   * certificate relied on all of them, so revoking any one ends it (the KRL lists it).
   */
  reliedOn: ActiveGrant[];
}

/**
 * At most this many grant ids in a key id (sshd logs it; each is ~26 characters): the
 * store records all of them, and the KRL is made from the store.
 */
export const KEY_ID_GRANTS = 8;

/**
 * The key id's `grant=` field: the ids in order, the first KEY_ID_GRANTS of them, then
 * `+<n>` for the rest.
 *
 * @example keyIdGrants(["acc_a", "acc_b"]) // → "grant=acc_a,acc_b"
 */
export function keyIdGrants(ids: readonly string[]): string {
  const named = ids.slice(0, KEY_ID_GRANTS);
  const more = ids.length - named.length;
  return `grant=${named.join(",")}${more > 0 ? `,+${more}` : ""}`;
}

/**
 * The grant ids a key id names (`grant=<id>,<id>…`, see keyIdGrants; a `+<n>` count is
 * not an id): empty when it names none.
 *
 * @example grantsNamedIn("zt:user=a decision=dec_1 grant=acc_a,bg_b serial=7") // → ["acc_a", "bg_b"]
 */
export function grantsNamedIn(keyId: string): string[] {
  const field = / grant=([A-Za-z0-9_,+-]+)(?: |$)/.exec(keyId)?.[1];
  if (field === undefined) return [];
  return [...new Set(field.split(",").filter((g) => /^[A-Za-z0-9_-]+$/.test(g)))];
}

/**
 * The held grants that make an `ssh:sign` decision's grant facts on `hostGroup` at `now`:
 * every JIT grant on a host group (all are in `context.grants`) and a break-glass on this
 * one. Others (App grants, another host group's break-glass, ended ones) change nothing.
 */
export function grantsShapingSsh(
  held: readonly ActiveGrant[],
  hostGroup: string,
  now: number,
): ActiveGrant[] {
  return held.filter((g) => {
    const group = hostGroupOfKey(g.resource);
    if (g.expiresAt <= now || group === undefined) return false;
    return g.kind === "jit" || group === hostGroup;
  });
}

/**
 * Whether an `ssh:sign` allow relied on grants, and until when it holds, so the
 * certificate never outlives the access that permitted it.
 *
 * Grants only end (they expire, or are revoked sooner), so the set in force shrinks over
 * time. This replays the decision with the grants left after each expiry, earliest
 * first; the first replay that does not allow marks the end of the permission. No
 * replay is needed for grants that leave the context unchanged (another host group's
 * break-glass). Undefined when the decision allows without any grant (or `allows` was
 * never true to begin with). A replay that throws counts as a denial: the bound is then
 * earlier, never later.
 *
 * A revocation is not an expiry: it can take away any grant, in any order. Which of
 * them the allow could do without depends on the policy, so every grant the facts were
 * made of is relied on (`reliedOn`), not only the one the certificate ends with.
 *
 * @example a policy permitting `context.grants.contains("prod")`, one JIT grant on
 *   HostGroup::"prod" until t → { until: t, grant, reliedOn: [grant] } (the replay without it denies).
 */
export async function boundByGrants(
  held: readonly ActiveGrant[],
  hostGroup: string,
  now: number,
  allows: (facts: SshGrantFacts) => Promise<boolean>,
): Promise<GrantBound | undefined> {
  const relevant = grantsShapingSsh(held, hostGroup, now).sort(
    (a, b) => a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  for (const g of relevant) {
    const left = relevant.filter((x) => x.expiresAt > g.expiresAt);
    let ok: boolean;
    try {
      ok = await allows(sshGrantContext(left, hostGroup, now));
    } catch {
      ok = false;
    }
    if (!ok)
      return { until: g.expiresAt, grant: g, reliedOn: [g, ...relevant.filter((x) => x !== g)] };
  }
  return undefined;
}
