import type { Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";
import { foundation } from "./0001-foundation.js";
import { pki } from "./0002-pki.js";
import { audit } from "./0003-audit.js";
import { deviceAccess } from "./0004-device-access.js";
import { identity } from "./0007-identity.js";
import { failedAttempts } from "./0008-failed-attempts.js";
import { sshCertGrants } from "./0009-ssh-cert-grants.js";
import { renewProofs } from "./0010-renew-proofs.js";
import { renewProofExpiry } from "./0011-renew-proof-expiry.js";
import { certKeyType } from "./0012-cert-key-type.js";
import { orphanDevices } from "./0013-orphan-devices.js";

/**
 * Every migration, in order. Names are sorted by Kysely, so keep the numeric prefix.
 * A capability adds its tables with a new file here and one line below.
 */
export function allMigrations(dialect: StoreDialect): Record<string, Migration> {
  return {
    "0001-foundation": foundation(dialect),
    "0002-pki": pki(dialect),
    "0003-audit": audit(dialect),
    "0004-device-access": deviceAccess(dialect),
    "0007-identity": identity(dialect),
    "0008-failed-attempts": failedAttempts(dialect),
    "0009-ssh-cert-grants": sshCertGrants(dialect),
    "0010-renew-proofs": renewProofs(dialect),
    "0011-renew-proof-expiry": renewProofExpiry(dialect),
    "0012-cert-key-type": certKeyType(dialect),
    "0013-orphan-devices": orphanDevices(dialect),
  };
}
