import { isIP } from "node:net";
import { ZtError } from "../core/errors.js";

/** A principal is a user or host name: printable, no separators OpenSSH would split on. */
export function validatePrincipals(principals: readonly string[]): string[] {
  if (principals.length === 0) {
    // PROTOCOL.certkeys: an empty list means "any principal"; zt never issues that.
    throw new ZtError("ZT_BAD_REQUEST", "at least one --principal is required", {
      reason: "principals-empty",
    });
  }
  if (principals.length > 32)
    throw new ZtError("ZT_BAD_REQUEST", "at most 32 principals", { reason: "principals-too-many" });
  for (const p of principals) {
    if (!/^[A-Za-z0-9._@+-]{1,256}$/.test(p)) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `invalid principal ${JSON.stringify(p.slice(0, 60))}: letters, digits and . _ @ + - only`,
        {
          reason: "principal-invalid",
        },
      );
    }
  }
  return [...new Set(principals)];
}

/** Validates `source-address` entries (CIDR or bare address), as sshd's addr_match_cidr_list wants them. */
export function validateSourceAddresses(list: readonly string[]): string[] {
  for (const c of list) {
    const [addr, bits, extra] = c.split("/");
    const family = isIP(addr ?? "");
    const max = family === 4 ? 32 : 128;
    const ok =
      family !== 0 &&
      extra === undefined &&
      (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= max));
    if (!ok) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `invalid --source-address ${JSON.stringify(c.slice(0, 60))}: expected a CIDR like 10.0.0.0/8`,
        {
          reason: "source-address-invalid",
        },
      );
    }
  }
  return [...list];
}

export function validateForceCommand(cmd: string | undefined): string | undefined {
  if (cmd === undefined) return undefined;
  if (cmd.length === 0 || cmd.length > 1024 || /[\0\r\n]/.test(cmd)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      "--force-command must be 1 to 1024 characters on one line",
      {
        reason: "force-command-invalid",
      },
    );
  }
  return cmd;
}

/**
 * A host certificate principal. OpenSSH matches host-certificate principals as patterns
 * (`*`, `?`), so a wildcard would make the certificate valid for other hosts — `*` for
 * any. Refused, except one leftmost `*.` label over a domain of at least two labels whose
 * last label is not numeric (`*.web.example.com`; OpenSSH's `*` also matches dots, so it
 * covers every name under that domain, at any depth).
 */
export function validateHostname(h: string): string {
  const name = h.toLowerCase();
  const rest = name.startsWith("*.") ? name.slice(2) : name;
  const ok =
    /^[a-z0-9]([a-z0-9.-]{0,252})$/.test(rest) &&
    (rest === name ||
      (/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(rest) &&
        /[a-z]/.test(rest.slice(rest.lastIndexOf(".") + 1))));
  if (!ok) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `invalid --hostname ${JSON.stringify(h.slice(0, 60))}: a host name or address; the only wildcard allowed is a leftmost "*." over a domain of two or more labels (*.example.com)`,
      { reason: "hostname-invalid" },
    );
  }
  return name;
}

/**
 * The host field of a known_hosts line (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT): comma-separated
 * patterns of names and addresses with `*`, `?`, a leading `!`, `[host]:port`, or a hashed
 * `|1|…|…` entry. Never whitespace (it would split the line's fields), a control character
 * (a newline would add a line of its own) or `#`.
 */
export function validateKnownHostsPattern(pattern: string): string {
  if (!/^[A-Za-z0-9.*?!:_\-[\],|=+/]{1,1024}$/.test(pattern))
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `host pattern: expected known_hosts patterns such as * or *.example.test,10.0.0.* (no spaces), got ${JSON.stringify(pattern.slice(0, 100))}`,
      { reason: "host-pattern-invalid" },
    );
  return pattern;
}
