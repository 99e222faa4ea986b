import { ZtError } from "../core/errors.js";

/** User and group names: lowercase, start with a letter or digit, at most 64 characters. */
export const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

const EMAIL_RE = /^[^\s@<>"]+@[^\s@<>"]+\.[^\s@<>"]+$/;

/** Validates a user name; throws ZT_BAD_REQUEST naming the field otherwise. */
export function parseUserName(name: unknown, field = "name"): string {
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${field}: expected a lowercase user name of 1–64 letters, digits, ".", "_" or "-" starting with a letter or digit, got ${JSON.stringify(String(name).slice(0, 80))}`,
      { field },
    );
  }
  return name;
}

export function parseGroupName(name: unknown, field = "group"): string {
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${field}: expected a lowercase group name of 1–64 letters, digits, ".", "_" or "-" starting with a letter or digit, got ${JSON.stringify(String(name).slice(0, 80))}`,
      { field },
    );
  }
  return name;
}

export function parseGroupNames(names: readonly unknown[], field = "groups"): string[] {
  return [...new Set(names.map((g, i) => parseGroupName(g, `${field}[${i}]`)))].sort();
}

export function parseEmail(email: unknown, field = "email"): string {
  if (typeof email !== "string" || email.length > 254 || !EMAIL_RE.test(email)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${field}: expected an e-mail address like ada@example.test`,
      {
        field,
      },
    );
  }
  return email;
}

export const MIN_PASSWORD_LENGTH = 8;
