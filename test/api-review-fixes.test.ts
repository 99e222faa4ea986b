/**
 * Regression tests from the security review of the control-plane API, each named after
 * what it stops. `zt up` in process, requests over real sockets on loopback, keys from
 * the real ssh-keygen.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { createApiServer } from "../src/api/index.js";
import { auditRows } from "./helpers/audit-rows.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { addUsers, runUpInProcess } from "./helpers/zt-up-in-process.js";

const POLICIES = `
@id("ssh-from-loopback")
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"lo")
when { context has source_ip && context.source_ip.isLoopback() };
`;

let zt: RunningZt;
let dir: string;
let aliceToken: string;
let pub: string;

beforeAll(async () => {
  dir = tempDir("zt-api-review-");
  zt = await runUpInProcess(
    writeConfig(dir, "data_dir: ./data\n", { "ssh.cedar": POLICIES }),
    new ManualClock(Date.now()),
  );
  const users = await addUsers(zt, [["alice", ["eng"]]]);
  aliceToken = (
    await zt.services.sessions.create({
      userId: users["alice"]!.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    })
  ).token;
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
  pub = readFileSync(join(dir, "id.pub"), "utf8");
}, 60_000);

afterAll(async () => {
  await zt?.close();
});

describe("an API on an IPv6 socket (listen.api [::]:8400) serving IPv4 clients", () => {
  let api: FastifyInstance;
  let base: string;

  beforeAll(async () => {
    api = await createApiServer(zt.ctx, { sessions: zt.services.sessions });
    // An IPv6 socket bound to the IPv4-mapped loopback: IPv4 clients arrive as
    // ::ffff:127.0.0.1, as they do on a dual-stack [::] listener (loopback traffic only).
    await api.listen({ host: "::ffff:127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(api.server.address() as { port: number }).port}`;
  });

  afterAll(async () => {
    await api?.close();
  });

  it("stops ssh:sign from seeing an IPv4 client as ::ffff:a.b.c.d (a policy on context.source_ip errored: denied as policy-error), and audits the plain address", async () => {
    const res = await fetch(`${base}/api/v1/ssh/sign`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${aliceToken}` },
      body: JSON.stringify({ public_key: pub, principals: ["alice"], host_group: "lo" }),
    });
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status, JSON.stringify(body)).toBe(201);
    const rows = await auditRows(zt.ctx, "ssh.sign", ["source_ip", "outcome", "decision_id"]);
    const mine = rows.filter((r) => r.decision_id === body["decision_id"]);
    expect(mine.map((r) => [r.outcome, r.source_ip])).toEqual([["success", "127.0.0.1"]]);
  });

  it("records the plain IPv4 address of a refused request too (SVID issuance)", async () => {
    await fetch(`${base}/api/v1/svid`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer ztjoin_nope" },
      body: JSON.stringify({
        csr: readFileSync(join(dir, "id.pub"), "utf8"),
      }),
    });
    const svid = await auditRows(zt.ctx, "svid.issue", ["source_ip", "outcome"]);
    expect(svid.at(-1)).toEqual({ source_ip: "127.0.0.1", outcome: "failure" });
  });
});
