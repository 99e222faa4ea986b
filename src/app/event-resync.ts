import type { AppContext } from "./app-context.js";
import type { EventResync } from "../events/index.js";
import type { AssertionSigner } from "../proxy/index.js";

/**
 * The resync, after events were pruned past this process's position, of the state that
 * is kept current only by events and whose holders have no resync of their own: the
 * assertion signing key (a missed `config.changed` rotation) and the PKI (a missed
 * `cert.revoked` or intermediate rotation). The PKI is fed the store's current state as
 * restated events, so its deny list, the PEP's cut of live connections on a revoked
 * certificate and the CA reload all run as for the events themselves.
 */
export function followEventResync(ctx: AppContext, assertions: AssertionSigner): () => void {
  return ctx.events.onResync(async (r) => {
    assertions.keysChanged();
    await restatePki(ctx, r);
  });
}

async function restatePki(ctx: AppContext, r: EventResync): Promise<void> {
  const rows = await ctx.store.db
    .selectFrom("pki_certs")
    .select(["serial", "not_after"])
    .where("revoked_at", "is not", null)
    .where("not_after", ">", ctx.clock.now())
    .execute();
  if (rows.length > 0)
    r.restate("cert.revoked", {
      kind: "x509",
      serials: rows.map((x) => x.serial),
      not_after: rows.map((x) => Number(x.not_after)),
      reason: "events-resync",
      // Not an event from the log: no seq of its own, no one revocation's reason or record.
      restated: true,
    });
  // No intermediate named: a holder of the CAs re-reads them.
  r.restate("config.changed", { component: "pki", reason: "events-resync" });
}
