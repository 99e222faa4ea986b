/**
 * A PEP (pep-fixture.ts) with one route, `app`, from `http://<host>` to a real upstream
 * that records every request reaching it: the setup of tests that send the PEP requests
 * and check what it refused, recorded and let through.
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

/** Starts the upstream, then the PEP routing `http://<host>` to it. */
export async function startPepAppRoute(o: PepAppRouteOptions): Promise<PepAppRoute> {
  const { host, websockets, ...pepOptions } = o;
  const upstream = await startUpstream();
  try {
    const pep = await startPep({
      ...pepOptions,
      routes: [
        {
          name: "app",
          from: `http://${host}`,
          to: `http://127.0.0.1:${upstream.port}`,
          ...(websockets ? { websockets } : {}),
        },
      ],
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
