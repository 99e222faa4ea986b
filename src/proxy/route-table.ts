import type { ResolvedRoute } from "../config/index.js";
import { ZtError } from "../core/errors.js";
import { canonicalPath } from "./canonical-request.js";

/** Matches a canonical host + path to a route: exact host, longest path prefix. Pure. */
export class RouteTable {
  #byHost: Map<string, ResolvedRoute[]>;

  constructor(routes: readonly ResolvedRoute[]) {
    this.#byHost = indexRoutes(routes);
  }

  /**
   * Matches against these routes from now on (a config reload). All or nothing: a route
   * refused here leaves the table as it was. A request already matched keeps its route.
   */
  replace(routes: readonly ResolvedRoute[]): void {
    this.#byHost = indexRoutes(routes);
  }

  match(host: string, path: string): ResolvedRoute | undefined {
    const list = this.#byHost.get(host);
    if (!list) return undefined;
    for (const r of list) {
      const p = r.pathPrefix;
      if (p === "/" || path === p || path.startsWith(p + "/")) return r;
    }
    return undefined;
  }
}

function indexRoutes(routes: readonly ResolvedRoute[]): Map<string, ResolvedRoute[]> {
  const byHost = new Map<string, ResolvedRoute[]>();
  for (const r of routes) {
    // Request paths are matched in canonical form: a prefix in another form would never
    // match, and its requests would fall through to a shorter prefix (config load
    // canonicalises prefixes; this guards routes built any other way).
    const c = canonicalPath(r.pathPrefix);
    const p = r.pathPrefix;
    if (!c.ok || c.path !== p || (p !== "/" && p.endsWith("/"))) {
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `route "${r.name}": path prefix ${JSON.stringify(p)} is not in canonical form`,
        { route: r.name },
      );
    }
    const list = byHost.get(r.host) ?? [];
    list.push(r);
    list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
    byHost.set(r.host, list);
  }
  return byHost;
}
