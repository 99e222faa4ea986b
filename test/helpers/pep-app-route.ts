/**
 * A PEP (pep-fixture.ts) with routes to a real upstream that records every request
 * reaching it (one route, `app`, from `http://<host>`, or the caller's): the setup of
 * tests that send the PEP requests and check what it refused, recorded and let through.
 */
import {
  startPep,
  startUpstream,
  type PepFixture,
  type PepFixtureOptions,
} from "../pep-fixture.js";

export type Upstream = Awaited<ReturnType<typeof startUpstream>>;

export interface PepAppRoute {
  pep: PepFixture;
  upstream: Upstream;
  /** Closes the PEP, then the upstream. */
  close(): Promise<void>;
}

export interface PepAppRouteOptions extends Omit<PepFixtureOptions, "routes"> {
  /** The route's host name (`from: http://<host>`). */
  host: string;
  /** The route passes WebSocket upgrades. */
  websockets?: boolean;
}

export interface PepWithUpstreamOptions extends Omit<PepFixtureOptions, "routes"> {
  /** The PEP's routes, given the upstream's URL (`http://127.0.0.1:<port>`). */
  routes: (to: string) => PepFixtureOptions["routes"];
}

/** Starts the recording upstream, then the PEP with routes to it. */
export async function startPepWithUpstream(o: PepWithUpstreamOptions): Promise<PepAppRoute> {
  const { routes, ...pepOptions } = o;
  const upstream = await startUpstream();
  try {
    const pep = await startPep({
      ...pepOptions,
      routes: routes(`http://127.0.0.1:${upstream.port}`),
    });
    return {
      pep,
      upstream,
      close: async () => {
        await pep.close();
        await upstream.close();
      },
    };
  } catch (e) {
    await upstream.close();
    throw e;
  }
}

/** Starts the upstream, then the PEP routing `http://<host>` to it. */
export function startPepAppRoute(o: PepAppRouteOptions): Promise<PepAppRoute> {
  const { host, websockets, ...pepOptions } = o;
  return startPepWithUpstream({
    ...pepOptions,
    routes: (to) => [
      { name: "app", from: `http://${host}`, to, ...(websockets ? { websockets } : {}) },
    ],
  });
}
