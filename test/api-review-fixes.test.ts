/**
 * Regression tests from the security review of the control-plane API, each named after
 * what it stops. `zt up` in process, requests over real sockets on loopback, keys from
 * the real ssh-keygen.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { opensslRequest } from "./helpers/tls.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { createApiServer } from "../src/api/index.js";
import { pkiService } from "../src/pki/index.js";
import { auditRows } from "./helpers/audit-rows.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { addUsers, runUpInProcess } from "./helpers/zt-up-in-process.js";
import { testSession } from "./helpers/test-session.js";

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
  aliceToken = (await testSession(zt.services.sessions, users["alice"]!.id)).token;
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

describe("POST /api/v1/ssh/sign refusing a field's value", () => {
  it("stops the refusal from naming a CLI flag (--principal, --source-address, --force-command) or no field at all: it names the JSON field, as `field` and at the head of the message", async () => {
    const base = `http://127.0.0.1:${zt.apiAddress.port}`;
    const valid = { public_key: pub, principals: ["alice"], host_group: "prod" };
    for (const [change, field, code] of [
      [{ principals: [] }, "principals", "ZT_BAD_REQUEST"],
      [{ principals: ["alice bob"] }, "principals", "ZT_BAD_REQUEST"],
      [
        { principals: Array.from({ length: 40 }, (_, i) => `u${i}`) },
        "principals",
        "ZT_BAD_REQUEST",
      ],
      [{ source_addresses: ["10.0.0.0/99"] }, "source_addresses", "ZT_BAD_REQUEST"],
      [{ force_command: "" }, "force_command", "ZT_BAD_REQUEST"],
      [{ force_command: "a\nb" }, "force_command", "ZT_BAD_REQUEST"],
      [{ host_group: "prod servers" }, "host_group", "ZT_BAD_REQUEST"],
      [{ ttl: "30s" }, "ttl", "ZT_PKI_TTL_INVALID"],
      [{ ttl: "soon" }, "ttl", "ZT_PKI_TTL_INVALID"],
      [{ public_key: "ssh-ed25519 AAAA" }, "public_key", "ZT_PKI_KEY_INVALID"],
      [{ public_key: "not a key" }, "public_key", "ZT_PKI_KEY_INVALID"],
    ] as const) {
      const res = await fetch(`${base}/api/v1/ssh/sign`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${aliceToken}` },
        body: JSON.stringify({ ...valid, ...change }),
      });
      const what = JSON.stringify(change).slice(0, 80);
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(res.status, what).toBe(400);
      expect(body.error["code"], what).toBe(code);
      expect(body.error["field"], what).toBe(field);
      expect(String(body.error["message"]), what).toMatch(new RegExp(`^${field}: `));
      expect(String(body.error["message"]), what).not.toContain("--");
      // The stable reason is kept.
      expect(body.error["reason"], what).toMatch(/^[a-z-]+$/);
    }
  });
});

describe("a JSON body sent with another content type", () => {
  it("stops text/plain (fetch's default for a string body) from being read as a string and refused as 'expected object': 415 ZT_UNSUPPORTED_MEDIA_TYPE saying to send application/json", async () => {
    const base = `http://127.0.0.1:${zt.apiAddress.port}`;
    const valid = JSON.stringify({ public_key: pub, principals: ["alice"], host_group: "lo" });
    for (const headers of [
      {}, // fetch sends a string as text/plain;charset=UTF-8
      { "content-type": "text/plain" },
      { "content-type": "application/x-www-form-urlencoded" },
    ] as Record<string, string>[]) {
      const res = await fetch(`${base}/api/v1/ssh/sign`, {
        method: "POST",
        headers: { ...headers, authorization: `Bearer ${aliceToken}` },
        body: valid,
      });
      const what = JSON.stringify(headers);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status, what).toBe(415);
      expect(body.error.code, what).toBe("ZT_UNSUPPORTED_MEDIA_TYPE");
      expect(body.error.message, what).toContain("application/json");
    }
  });
});

describe("POST /api/v1/svid refusing its ttl", () => {
  it("stops a ttl that is not a duration from being ZT_BAD_REQUEST while one out of range is ZT_PKI_TTL_INVALID (and ssh/sign answers both with the latter): one code, naming the field", async () => {
    const base = `http://127.0.0.1:${zt.apiAddress.port}`;
    const svc = await pkiService(zt.ctx);
    await svc.addRegistration({ spiffeId: "spiffe://example.test/ttl" }, "test");
    const csr = opensslRequest({
      keyOut: join(dir, "w.key"),
      out: join(dir, "w.csr"),
      subj: "/CN=w",
      san: "URI:spiffe://example.test/ttl",
      csr: true,
    });
    for (const ttl of ["soon", -1, "30s", "400d"]) {
      const { token } = await svc.createJoinToken("spiffe://example.test/ttl", "test");
      const res = await fetch(`${base}/api/v1/svid`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ csr, ttl }),
      });
      const body = (await res.json()) as { error: Record<string, unknown> };
      const what = `ttl ${JSON.stringify(ttl)}: ${JSON.stringify(body)}`;
      expect(res.status, what).toBe(400);
      expect(body.error["code"], what).toBe("ZT_PKI_TTL_INVALID");
      expect(body.error["field"], what).toBe("ttl");
      expect(String(body.error["message"]), what).toMatch(/^ttl: /);
    }
  });
});
