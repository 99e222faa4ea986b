import { ZtError } from "../core/errors.js";

/**
 * What an access request or a break-glass opens: an App (a PEP route) or an SSH host
 * group (the `HostGroup` that `ssh:sign` decides on).
 */
export type AccessResource = { type: "App"; name: string } | { type: "HostGroup"; name: string };

const APP = "[a-z0-9][a-z0-9_-]{0,62}";
/** The host group names `ssh:sign` accepts (see SshAuthority.signUser). */
const HOST_GROUP = "[A-Za-z0-9._-]{1,128}";
const RESOURCE_RE = new RegExp(`^(?:App::"(${APP})"|(${APP})|HostGroup::"(${HOST_GROUP})")$`);
const HOST_GROUP_KEY_RE = new RegExp(`^HostGroup::"(${HOST_GROUP})"$`);

/** What a resource may be written as, for error messages. */
export const RESOURCE_SYNTAX = 'App::"name", an app name, or HostGroup::"name"';

/**
 * Parses `App::"db-admin"`, `db-admin` or `HostGroup::"prod"`; anything else is
 * `ZT_BAD_REQUEST` naming `field`.
 */
export function parseAccessResource(text: string, field = "--resource"): AccessResource {
  const m = RESOURCE_RE.exec(text.trim());
  if (!m)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${field}: expected ${RESOURCE_SYNTAX}, got ${JSON.stringify(text)}`,
    );
  if (m[3] !== undefined) return { type: "HostGroup", name: m[3] };
  return { type: "App", name: (m[1] ?? m[2])! };
}

/**
 * The one string a resource is stored and configured under: an App by its bare name
 * (as before host groups existed), a host group as `HostGroup::"name"`. App names
 * cannot contain `:`, so the two never collide.
 */
export function resourceKey(r: AccessResource): string {
  return r.type === "App" ? r.name : `HostGroup::"${r.name}"`;
}

/** The host group a stored resource key names, or undefined for an App. */
export function hostGroupOfKey(key: string): string | undefined {
  return HOST_GROUP_KEY_RE.exec(key)?.[1];
}

/** Whether `text` is a resource in any accepted spelling (for config schemas). */
export function isAccessResource(text: string): boolean {
  return RESOURCE_RE.test(text.trim());
}
