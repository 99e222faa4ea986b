import type { AppContext } from "./app-context.js";
import { IdentityService } from "../identity/index.js";
import { SessionService } from "../session/index.js";
import { EntitySnapshot } from "../session/entity-snapshot.js";
import { PolicyHolder } from "../session/policy-holder.js";
import { AssertionSigner, DecisionPoint } from "../proxy/index.js";

/** The running services of one zt process, built from its AppContext. */
export interface Services {
  ctx: AppContext;
  identity: IdentityService;
  sessions: SessionService;
  policies: PolicyHolder;
  snapshot: EntitySnapshot;
  decisions: DecisionPoint;
  assertions: AssertionSigner;
  close(): void;
}

/**
 * Builds the services `zt up` runs: loads the policy set (refusing to start on an
 * invalid one), the entity snapshot and the assertion key.
 */
export async function createServices(ctx: AppContext): Promise<Services> {
  const identity = new IdentityService(ctx);
  const sessions = new SessionService(ctx);
  const policies = new PolicyHolder(ctx);
  policies.load();
  const snapshot = new EntitySnapshot(ctx);
  await snapshot.load();
  const decisions = new DecisionPoint(ctx, () => policies.engine, snapshot.entities);
  const assertions = new AssertionSigner(ctx.keys, ctx.clock, `zt:${ctx.config.trust_domain}`);
  await assertions.init();
  const stopFollowingKeys = assertions.followRotations(ctx.events);
  return {
    ctx,
    identity,
    sessions,
    policies,
    snapshot,
    decisions,
    assertions,
    close() {
      stopFollowingKeys();
      policies.close();
      snapshot.close();
      sessions.close();
    },
  };
}
