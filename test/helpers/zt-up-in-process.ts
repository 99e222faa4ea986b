/**
 * `zt up` in the test's own process (`runUp`), listening on loopback ports of the
 * system's choosing, with an injected clock; its users, made through its services; and
 * the whole setup of a suite: a recording upstream, zt.yaml, `zt up` and its users.
 */
import type { Clock } from "../../src/core/clock.js";
import { runUp, type RunningZt } from "../../src/app/run-up.js";
import { startRecordingUpstream } from "./upstream.js";
import { tempDir, writeConfig } from "./zt-process.js";

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

export interface ZtUpWithUpstreamOptions {
  /** zt.yaml, given the upstream's URL (`http://127.0.0.1:<port>`) for its routes. */
  yaml: (to: string) => string;
  /** The files of the policies folder, by name. */
  policies: Record<string, string>;
  /** Made as `addUsers` makes them. */
  users: readonly (readonly [name: string, groups: readonly string[]])[];
  clock: Clock;
  /** The temporary directory's name prefix. */
  dirPrefix?: string;
}

export interface ZtUpWithUpstream {
  zt: RunningZt;
  /** The PEP's port. */
  port: number;
  /** The temporary directory holding zt.yaml, the policies folder and the data. */
  dir: string;
  /** zt.yaml's path (for `zt --config`). */
  config: string;
  upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  users: Record<string, AddedUser>;
  /** Closes zt, then the upstream. */
  close(): Promise<void>;
}

/**
 * Starts a recording (and WebSocket-echoing) upstream, writes zt.yaml and the policies
 * into a fresh temporary directory, runs `zt up` in process and adds the users.
 */
export async function startZtUpWithUpstream(o: ZtUpWithUpstreamOptions): Promise<ZtUpWithUpstream> {
  const upstream = await startRecordingUpstream();
  try {
    const dir = tempDir(o.dirPrefix);
    const config = writeConfig(dir, o.yaml(`http://127.0.0.1:${upstream.port}`), o.policies);
    const zt = await runUpInProcess(config, o.clock);
    const close = async () => {
      await zt.close();
      await upstream.close();
    };
    try {
      const users = await addUsers(zt, o.users);
      return { zt, port: zt.pepAddress.port, dir, config, upstream, users, close };
    } catch (e) {
      await zt.close();
      throw e;
    }
  } catch (e) {
    await upstream.close();
    throw e;
  }
}
