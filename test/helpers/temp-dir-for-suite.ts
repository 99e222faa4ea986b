import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";

/**
 * A fresh temporary directory for the enclosing describe: made in its beforeAll, removed
 * with all it holds in its afterAll. Returns its path's getter, for the tests.
 *
 * @example
 * const dir = tempDirForSuite("zt-seg-log-");
 * it("…", async () => writeFile(join(dir(), "log.yaml"), text));
 */
export function tempDirForSuite(prefix: string): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!dir) throw new Error("the suite's temporary directory is not made yet");
    return dir;
  };
}
