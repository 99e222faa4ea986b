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
 * @example a policy permitting `context.grants.contains("prod")`, one JIT grant on
 *   HostGroup::"prod" until t → { until: t, grant } (the replay without it denies).
 */
export async function boundByGrants(
  held: readonly ActiveGrant[],
  hostGroup: string,
  now: number,
  allows: (facts: SshGrantFacts) => Promise<boolean>,
): Promise<GrantBound | undefined> {
  const relevant = held
    .filter((g) => {
      const group = hostGroupOfKey(g.resource);
      if (g.expiresAt <= now || group === undefined) return false;
      return g.kind === "jit" || group === hostGroup;
    })
    .sort((a, b) => a.expiresAt - b.expiresAt);
  for (const g of relevant) {
    const left = relevant.filter((x) => x.expiresAt > g.expiresAt);
    let ok: boolean;
    try {
      ok = await allows(sshGrantContext(left, hostGroup, now));
    } catch {
      ok = false;
    }
    if (!ok) return { until: g.expiresAt, grant: g };
  }
  return undefined;
}
