import { ZtError } from "../core/errors.js";
import type { SecretBox } from "../core/secret-box.js";
import type { Store } from "../store/index.js";
import { sealedPurpose } from "./sealed-purposes.js";

/**
 * Refuses a master key that does not open the store's sealed secrets, before a command
 * changes anything: one run with another ZT_MASTER_KEY (or master_key_file) would seal a
 * new user's TOTP secret, a new signing key or a CA key under a key the store does not
 * have — the user could never sign in, and `zt keys rotate-master` would refuse the whole
 * store. One sealed secret is opened (a signing key, else a CA key, else a TOTP secret);
 * a store with none has nothing to check against. `source` names where the key came from.
 */
export async function assertMasterKeyOpensStore(
  store: Store,
  box: SecretBox,
  source: string,
): Promise<void> {
  const sample = await oneSealedSecret(store);
  if (!sample) return;
  try {
    box.open(sample.purpose, sample.sealed);
  } catch {
    throw new ZtError(
      "ZT_KEY_DECRYPT_FAILED",
      `the master key from ${source} does not open this store's secrets (${sample.what}): it is not the key the store was sealed with; nothing was changed`,
      { source },
    );
  }
}

async function oneSealedSecret(
  store: Store,
): Promise<{ purpose: string; sealed: string; what: string } | undefined> {
  const key = await store.db
    .selectFrom("keys")
    .select(["id", "purpose", "private_sealed"])
    .orderBy("id")
    .limit(1)
    .executeTakeFirst();
  if (key)
    return {
      purpose: sealedPurpose.signingKey(key.purpose),
      sealed: key.private_sealed,
      what: `signing key ${key.id}`,
    };
  const ca = await store.db
    .selectFrom("pki_cas")
    .select(["id", "private_sealed"])
    .orderBy("id")
    .limit(1)
    .executeTakeFirst();
  if (ca)
    return { purpose: sealedPurpose.ca(ca.id), sealed: ca.private_sealed, what: `CA ${ca.id}` };
  const user = await store.db
    .selectFrom("users")
    .select(["id", "totp_secret_sealed"])
    .where("totp_secret_sealed", "is not", null)
    .orderBy("id")
    .limit(1)
    .executeTakeFirst();
  if (user?.totp_secret_sealed)
    return {
      purpose: sealedPurpose.totp(user.id),
      sealed: user.totp_secret_sealed,
      what: `the TOTP secret of user ${user.id}`,
    };
  return undefined;
}
