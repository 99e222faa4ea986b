/**
 * Regression tests from the security review of the Policy Administrator, sign-in and the
 * admin API, each named after what it stops. A real PEP on a real socket, the real `zt`
 * CLI making admin changes from another process, real upstreams.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { startPep, startUpstream, type PepFixture } from "./pep-fixture.js";
import { request } from "./helpers/http-client.js";
import { runZt } from "./helpers/zt-process.js";

const POLICY = `
permit (principal in Group::"eng", action, resource == App::"app");
permit (principal in Group::"admins", action, resource == App::"admin");
`;

/** The payload of a JWT (not verified: the assertion tests verify signatures elsewhere). */
function jwtPayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
}

describe("identity assertions follow the user's current identity", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let cookie: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const to = `http://127.0.0.1:${upstream.port}`;
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "app", from: "http://app.localhost", to },
        { name: "admin", from: "http://admin.localhost", to },
      ],
    });
    await zt.ctx.events.start();
    await zt.addUser("alice", ["eng", "admins"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  const get = (host: string) =>
    request(zt.port, { host, path: "/", headers: { cookie, accept: "application/json" } });

  /** The groups claim of the assertion the upstream got with its last request. */
  const lastAssertionGroups = () => {
    const jwt = upstream.seen.at(-1)!.headers["x-zt-assertion"];
    expect(typeof jwt).toBe("string");
    return jwtPayload(jwt as string)["groups"];
  };

  it("a user removed from a group is not still named in it by a cached assertion (upstreams authorising on the signed groups kept granting admin for up to 30 s)", async () => {
    expect((await get("app.localhost")).status).toBe(200);
    expect(lastAssertionGroups()).toEqual(["admins", "eng"].sort());

    const config = join(zt.dir, "zt.yaml");
    const r = await runZt(["--config", config, "user", "groups", "alice", "--remove", "admins"]);
    expect(r.code, r.stderr).toBe(0);
    // Poll the PEP (not the clock) until it has heard the change: the admin app refuses.
    let status = 0;
    for (let i = 0; i < 200 && status !== 403; i++) {
      status = (await get("admin.localhost")).status;
      if (status !== 403) await new Promise((res) => setTimeout(res, 50));
    }
    expect(status).toBe(403);

    // Same session, same route: the signed assertion must say what the PEP now knows.
    expect((await get("app.localhost")).status).toBe(200);
    expect(lastAssertionGroups()).toEqual(["eng"]);
  });
});
