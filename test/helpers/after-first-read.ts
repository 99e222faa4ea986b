/**
 * A Kysely plugin for race tests: runs `between` once, right after the first read of
 * `table` through the store handle it is installed on has returned, and before the code
 * that made the read sees its rows. Another process (a second AppContext on the same
 * store) can then act in the window between a check and the write that relies on it.
 *
 * @example store.db = ctx.store.db.withPlugin(new AfterFirstRead("users", () => disable()));
 */
import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from "kysely";

export class AfterFirstRead implements KyselyPlugin {
  readonly #queries = new WeakMap<object, boolean>();
  #fired = false;
  constructor(
    readonly table: string,
    readonly between: () => Promise<void>,
  ) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    const node = args.node as { kind: string; from?: { froms?: Array<{ table?: unknown }> } };
    const table = node.from?.froms?.[0]?.table as { identifier?: { name?: string } } | undefined;
    if (node.kind === "SelectQueryNode" && table?.identifier?.name === this.table)
      this.#queries.set(args.queryId, true);
    return args.node;
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    if (!this.#fired && this.#queries.get(args.queryId)) {
      this.#fired = true;
      await this.between();
    }
    return args.result;
  }
}
