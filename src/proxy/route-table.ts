import type { ResolvedRoute } from "../config/index.js";

/** Matches a canonical host + path to a route: exact host, longest path prefix. Pure. */
export class RouteTable {
  readonly #byHost = new Map<string, ResolvedRoute[]>();

  constructor(routes: readonly ResolvedRoute[]) {
    for (const r of routes) {
      const list = this.#byHost.get(r.host) ?? [];
      list.push(r);
      list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
      this.#byHost.set(r.host, list);
    }
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
