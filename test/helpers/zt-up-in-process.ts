/**
 * `zt up` in the test's own process (`runUp`), listening on loopback ports of the
 * system's choosing, with an injected clock; and its users, made through its services.
 */
import type { Clock } from "../../src/core/clock.js";
import { runUp, type RunningZt } from "../../src/app/run-up.js";

/** The environment that puts the PEP and the API on free loopback ports. */
export const LOOPBACK_LISTEN_ENV = {
  ZT_LISTEN__PROXY: "127.0.0.1:0",
  ZT_LISTEN__API: "127.0.0.1:0",
};

/** The password every user made by `addUsers` signs in with. */
export const USER_PASSWORD = "pw-correct-horse-battery";

/** Starts `zt up` from `configPath` in process, on loopback, quiet, with `clock`. */
export function runUpInProcess(configPath: string, clock: Clock): Promise<RunningZt> {
  return runUp({ configPath, env: LOOPBACK_LISTEN_ENV, clock, out: () => undefined });
}

export interface AddedUser {
  id: string;
  totpSecret: string;
}

/**
 * Adds each user with its groups and `USER_PASSWORD`, and has the PEP's snapshot hold
 * it; returns each one's id and TOTP secret by name.
 */
export async function addUsers(
  zt: RunningZt,
  users: readonly (readonly [name: string, groups: readonly string[]])[],
): Promise<Record<string, AddedUser>> {
  const added: Record<string, AddedUser> = {};
  for (const [name, groups] of users) {
    const r = await zt.services.identity.addUser({
      name,
      groups: [...groups],
      password: USER_PASSWORD,
    });
    added[name] = { id: r.user.id, totpSecret: r.totpSecret };
    await zt.services.snapshot.refreshUser(r.user.id);
  }
  return added;
}
