/**
 * The scrypt work of a refused sign-in must not depend on what was right: a wrong
 * password, an unknown or banned name, a disabled account and the right password with a
 * wrong backup code all cost the same derivations. Time itself is never asserted here:
 * `node:crypto`'s `scrypt` is wrapped (it still runs) to record the cost parameter of
 * each derivation, and the lists are compared. Real PEP, real socket.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { postLogin } from "./helpers/http-client.js";

/** N of every scrypt run in this process while `recording` is set. */
const seen: { recording: boolean; n: number[] } = vi.hoisted(() => ({ recording: false, n: [] }));

vi.mock("node:crypto", async (original) => {
  const real = await original<typeof import("node:crypto")>();
  const scrypt = ((...args: unknown[]) => {
    const options = args.length === 5 ? (args[3] as { N?: number }) : undefined;
    if (seen.recording) seen.n.push(options?.N ?? 16_384);
    return (real.scrypt as (...a: unknown[]) => void)(...args);
  }) as typeof real.scrypt;
  return { ...real, default: { ...real, scrypt }, scrypt };
});

const { setBansForTest } = await import("../src/audit/alerts/ban-cache.js");
const { startPep } = await import("./pep-fixture.js");

const HOST = "app.localhost";

describe("sign-in: the same scrypt work whatever was right", () => {
  let zt: Awaited<ReturnType<typeof startPep>>;
  const users: Record<string, { password: string }> = {};

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
    for (const name of ["alice", "carol", "dave"]) users[name] = await zt.addUser(name, ["eng"]);
    await zt.services.identity.setDisabled("carol", true);
    setBansForTest({}, { alice: { until: Date.now() + 3_600_000, byOperator: true } });
  }, 60_000);

  afterAll(async () => {
    setBansForTest({});
    await zt?.close();
  });

  /** One JSON sign-in; the scrypt cost parameters it ran, in order. */
  async function workOf(body: Record<string, string>): Promise<{ status: number; n: number[] }> {
    seen.n = [];
    seen.recording = true;
    try {
      const status = await postLogin(zt.port, HOST, body);
      return { status, n: [...seen.n] };
    } finally {
      seen.recording = false;
    }
  }

  it("stops the right password with a wrong backup code from costing more than a wrong password", async () => {
    const code = "aaaaa-aaaaa"; // backup-code shaped, matches nothing
    const right = await workOf({ username: "dave", password: users["dave"]!.password, totp: code });
    const refusals = {
      "right password, wrong backup code": right,
      "wrong password": await workOf({ username: "dave", password: "not-it-at-all", totp: code }),
      "unknown name": await workOf({ username: "nobody-here", password: "whatever1", totp: code }),
      "disabled account, right password": await workOf({
        username: "carol",
        password: users["carol"]!.password,
        totp: code,
      }),
      "banned name, right password": await workOf({
        username: "alice",
        password: users["alice"]!.password,
        totp: code,
      }),
    };
    for (const [what, r] of Object.entries(refusals)) {
      expect(r.status, what).toBe(401);
      expect(r.n, what).toEqual(right.n);
    }
    // The check really ran the backup-code derivation (cheaper than a password's).
    expect(new Set(right.n).size).toBe(2);
  });
});
