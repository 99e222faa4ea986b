import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initPki, pkiService, type PkiService } from "../../src/pki/index.js";
import { insertTestUser, openPkiTestContext } from "../../src/pki/pki-testing.js";

export interface PkiSuite {
  /** A temp directory for the suite's own files (keys, CSRs, KRLs); removed by cleanup(). */
  dir: string;
  env: Awaited<ReturnType<typeof openPkiTestContext>>;
  svc: PkiService;
  cleanup(): Promise<void>;
}

/**
 * The PKI suites' common start: a temp dir with `policies/ssh.cedar`, a store-backed
 * AppContext on it, an initialised PKI, and the store-only users given (by default alice in
 * ops), for tests that need a principal rather than a sign-in.
 */
export async function openPkiSuite(
  prefix: string,
  policies: string,
  users: ReadonlyArray<{ id: string; name: string; groups?: readonly string[] }> = [
    { id: "u_alice", name: "alice", groups: ["ops"] },
  ],
): Promise<PkiSuite> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let env: PkiSuite["env"] | undefined;
  try {
    mkdirSync(join(dir, "policies"));
    writeFileSync(join(dir, "policies", "ssh.cedar"), policies);
    env = await openPkiTestContext({ policies: join(dir, "policies") });
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    for (const user of users) await insertTestUser(env.ctx.store.db, user);
    const opened = env;
    return {
      dir,
      env: opened,
      svc,
      cleanup: async () => {
        await opened.cleanup();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await env?.cleanup();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
