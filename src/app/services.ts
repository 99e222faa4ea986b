import type { AppContext } from "./app-context.js";
import { IdentityService } from "../identity/index.js";
import { SessionService } from "../session/index.js";
import { EntitySnapshot } from "../session/entity-snapshot.js";
import { PolicyHolder, type PolicyLoadReport } from "../session/policy-holder.js";
import { AssertionSigner, DecisionPoint } from "../proxy/index.js";
import { followEventResync } from "./event-resync.js";

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

export interface CreateServicesOptions {
  /**
   * Reload the policy set when its folder changes, telling this function each time.
   * Watching starts before the first load, so an edit made while the process starts
   * is reloaded, not missed.
   */
  watchPolicies?: (report: PolicyLoadReport) => void;
  /**
   * Told when the watch on the policy folder fails (the folder is then polled, and the
   * watch re-established). Default: a line on stderr.
   */
  policyWatchError?: (message: string) => void;
}

/**
 * Builds the services `zt up` runs: loads the policy set (refusing to start on an
 * invalid one), the entity snapshot and the assertion key.
 */
export async function createServices(
  ctx: AppContext,
  options: CreateServicesOptions = {},
): Promise<Services> {
  const identity = new IdentityService(ctx);
  const sessions = new SessionService(ctx);
  const policies = new PolicyHolder(ctx);
  if (options.watchPolicies)
    policies.watch(options.watchPolicies, {
      onWatchError:
        options.policyWatchError ??
        ((m) =>
          process.stderr.write(
            `zt: policy folder watch failed, polling it instead: ${m.replace(/[\r\n]+/g, " ")}\n`,
          )),
    });
  let snapshot: EntitySnapshot | undefined;
  let decisions: DecisionPoint;
  let assertions: AssertionSigner;
  try {
    policies.load();
    snapshot = new EntitySnapshot(ctx);
    await snapshot.load();
    decisions = new DecisionPoint(ctx, () => policies.engine, snapshot.entities);
    assertions = new AssertionSigner(ctx.keys, ctx.clock, `zt:${ctx.config.trust_domain}`);
    await assertions.init();
  } catch (e) {
    policies.close();
    snapshot?.close();
    sessions.close();
    throw e;
  }
  const stopFollowingKeys = assertions.followRotations(ctx.events);
  const stopResync = followEventResync(ctx, assertions);
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
      stopResync();
      policies.close();
      snapshot.close();
      sessions.close();
    },
  };
}
