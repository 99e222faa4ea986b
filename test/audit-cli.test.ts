import { beforeAll, describe, expect, it } from "vitest";
import {
  chmodSync,
  lstatSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { openStore } from "../src/store/index.js";
import { AuditLog } from "../src/audit/index.js";
import { ensureBuilt, makeEnv, runZt, type TestEnv } from "./audit-helpers.js";

async function seed(t: TestEnv): Promise<void> {
  const store = await openStore({ dataDir: t.dataDir });
  const now = Date.now();
  let i = 0;
  const log = new AuditLog(store, { clock: { now: () => now - 3_600_000 + 1000 * i++ } });
  log.record({
    kind: "login",
    outcome: "failure",
    subject: "alice",
    sourceIp: "192.0.2.7",
    reason: "bad-password",
    data: { password: "nope" },
  });
  log.record({
    kind: "login",
    outcome: "success",
    subject: "alice",
    sourceIp: "192.0.2.7",
    reason: "mfa-ok",
  });
  log.record({
    kind: "decision",
    outcome: "deny",
    subject: "alice",
    sourceIp: "192.0.2.7",
    route: "grafana",
    action: "POST",
    decisionId: "dec_abc123",
    policies: ["forbid-admin-writes"],
    reason: "mfa-too-old",
    data: { mode: "enforce", pep_id: "pep-1", errors: [], context: { mfa_age_s: 4000 } },
  });
  log.record({
    kind: "decision",
    outcome: "allow",
    subject: "bob",
    sourceIp: "192.0.2.8",
    route: "wiki",
    action: "GET",
    decisionId: "dec_ok",
    policies: ["p"],
    reason: "policy-allow",
  });
  await log.close();
  await store.close();
}

describe("zt audit tail|export|explain (real CLI)", () => {
  let t: TestEnv;
  beforeAll(async () => {
    ensureBuilt();
    t = makeEnv();
    await seed(t);
  }, 300_000);

  it("tail prints the newest events, oldest first, in human and JSON form", async () => {
    const r = await runZt(t, ["audit", "tail", "-n", "2"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      /decision\s+deny\s+alice\s+192\.0\.2\.7\s+grafana\s+POST\s+mfa-too-old\s+dec_abc123$/,
    );
    expect(lines[1]).toMatch(/decision\s+allow\s+bob/);
    const j = await runZt(t, ["audit", "tail", "--json", "-n", "4"]);
    const recs = j.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(recs.map((x) => x["seq"])).toEqual([1, 2, 3, 4]);
    expect(recs[0]).toMatchObject({
      kind: "login",
      outcome: "failure",
      data: { password: "[redacted]" },
    });
  });

  it("explain prints the stored decision with its evaluation details", async () => {
    const r = await runZt(t, ["audit", "explain", "dec_abc123"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("verdict   deny  reason: mfa-too-old");
    expect(r.stdout).toContain("policies  forbid-admin-writes");
    expect(r.stdout).toContain("pep_id    pep-1");
    expect(r.stdout).toContain('"mfa_age_s": 4000');
    const missing = await runZt(t, ["audit", "explain", "dec_nope"]);
    expect(missing.code).toBe(66);
    expect(missing.stderr).toBe("zt: error ZT_NOT_FOUND: no decision dec_nope in the audit log\n");
  });

  it("export writes JSON lines and OCSF (Authentication 3002, Network Activity 4001 + security_control)", async () => {
    const out = join(t.dir, "export.jsonl");
    const r = await runZt(t, ["audit", "export", "--since", "2h", "--format", "ocsf", "-o", out]);
    expect(r.code).toBe(0);
    const recs = readFileSync(out, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(recs).toHaveLength(4);
    expect(recs[0]).toMatchObject({
      class_uid: 3002,
      type_uid: 300201,
      status_id: 2,
      user: { name: "alice" },
      src_endpoint: { ip: "192.0.2.7" },
    });
    expect(recs[2]).toMatchObject({
      class_uid: 4001,
      action_id: 2,
      action: "Denied",
      disposition_id: 2,
      firewall_rule: { uid: "forbid-admin-writes" },
      metadata: { profiles: ["security_control"], sequence: 3 },
      unmapped: {
        decision_id: "dec_abc123",
        reason: "mfa-too-old",
        mode: "enforce",
        pep_id: "pep-1",
      },
    });
    expect(recs[3]).toMatchObject({ class_uid: 4001, action: "Allowed" });
    const none = await runZt(t, ["audit", "export", "--since", "1m"]);
    expect(none.stdout).toBe("");
    const bad = await runZt(t, ["audit", "export", "--format", "xml"]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain("ZT_USAGE: --format: expected jsonl or ocsf");
  });

  it("export -o replaces a file whole with 0600, never writes through a symlink, and fails cleanly on a bad folder", async () => {
    // An existing, world-readable file: replaced, not rewritten in place with its old mode.
    const out = join(t.dir, "old-export.jsonl");
    writeFileSync(out, "OLD-CONTENT-MARKER\n", { mode: 0o644 });
    chmodSync(out, 0o644);
    const r = await runZt(t, ["audit", "export", "--since", "2h", "-o", out]);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(readFileSync(out, "utf8")).not.toContain("OLD-CONTENT-MARKER");
    // A symlink planted at the output name is replaced, its target left alone.
    const victim = join(t.dir, "victim.txt");
    writeFileSync(victim, "precious\n");
    const link = join(t.dir, "linked-export.jsonl");
    symlinkSync(victim, link);
    expect((await runZt(t, ["audit", "export", "--since", "2h", "-o", link])).code).toBe(0);
    expect(readFileSync(victim, "utf8")).toBe("precious\n");
    expect(lstatSync(link).isSymbolicLink()).toBe(false);
    // A folder that does not exist: a clear error naming it, no stack trace, no leftovers.
    const missing = join(t.dir, "no-such-dir", "x.jsonl");
    const bad = await runZt(t, ["audit", "export", "--since", "2h", "-o", missing]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/^zt: error ZT_BAD_REQUEST: -o .*no-such-dir.*ENOENT/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    expect(readdirSync(t.dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});

describe("zt ban and zt alerts (real CLI)", () => {
  it("adds, lists and removes a ban; lists alerts; refuses bad targets", async () => {
    ensureBuilt();
    const t = makeEnv();
    const store = await openStore({ dataDir: t.dataDir });
    await store.db
      .insertInto("audit_alerts")
      .values({
        id: "alr_1",
        ts: Date.now() - 60_000,
        rule: "fan-out",
        severity: "high",
        key: "ip:203.0.113.4",
        message: "203.0.113.4 was denied on 5 distinct routes",
        seq: 42,
        data: "{}",
      })
      .execute();
    await store.close();

    const add = await runZt(t, ["ban", "add", "192.0.2.9", "--for", "1h", "--reason", "probe"]);
    expect(add.stderr).toBe("");
    expect(add.stdout).toMatch(/^banned ip:192\.0\.2\.9 until /);
    const list = await runZt(t, ["ban", "list", "--json"]);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({
        key: "ip:192.0.2.9",
        rule: "manual",
        reason: "probe",
        count: 1,
        lifted_at: null,
      }),
    ]);
    const bad = await runZt(t, ["ban", "remove", "not-an-ip"]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain(
      "ZT_BAD_REQUEST: expected an IP address, ip:<address or network> or user:<name>",
    );
    // Networks: written canonically; host bits, or a network wider than /32 (IPv6) or
    // /8 (IPv4), refused with what was wrong.
    const net = await runZt(t, ["ban", "add", "2001:DB8:1:2:0::/64", "--for", "1h"]);
    expect(net.stderr).toBe("");
    expect(net.stdout).toMatch(/^banned ip:2001:db8:1:2::\/64 until /);
    for (const target of ["2001:db8:1:2::7/64", "2001:db8::/16", "10.0.0.0/4", "10.0.0.0/33"]) {
      const r = await runZt(t, ["ban", "add", target, "--for", "1h"]);
      expect(r.code, target).toBe(64);
      expect(r.stderr).toContain("ZT_BAD_REQUEST: expected a network with no host bits set");
    }
    expect((await runZt(t, ["ban", "remove", "ip:2001:db8:1:2::/64"])).code).toBe(0);
    const rm = await runZt(t, ["ban", "remove", "ip:192.0.2.9"]);
    expect(rm.code).toBe(0);
    expect(JSON.parse((await runZt(t, ["ban", "list", "--json"])).stdout)).toEqual([]);

    const alerts = await runZt(t, ["alerts", "list"]);
    expect(alerts.code).toBe(0);
    expect(alerts.stdout).toMatch(
      /high\s+fan-out\s+ip:203\.0\.113\.4\s+42\s+203\.0\.113\.4 was denied/,
    );

    // The ban and its removal are in the audit log, and the chain verifies.
    const tail = await runZt(t, ["audit", "tail", "--json"]);
    expect(
      tail.stdout
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { kind: string }).kind),
    ).toEqual(["ban.add", "ban.add", "ban.remove", "ban.remove"]);
    expect((await runZt(t, ["audit", "verify"])).code).toBe(0);
  }, 180_000);
});

describe("zt audit tail --follow (real CLI)", () => {
  it("prints events written after it started", async () => {
    ensureBuilt();
    const t = makeEnv();
    await (await openStore({ dataDir: t.dataDir })).close();
    const { spawn } = await import("node:child_process");
    const { ZT } = await import("./audit-helpers.js");
    const child = spawn(
      process.execPath,
      [ZT, "-c", t.config, "audit", "tail", "--follow", "--json", "-n", "0"],
      {
        env: t.env,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    try {
      const store = await openStore({ dataDir: t.dataDir });
      const log = new AuditLog(store, { clock: { now: () => Date.now() } });
      // Keep writing until the follower shows one (it may start after the first write).
      for (let i = 0; i < 600 && !out.includes('"subject":"followed"'); i++) {
        log.record({
          kind: "decision",
          outcome: "deny",
          subject: "followed",
          decisionId: `dec_f${i}`,
        });
        await log.flush();
        await new Promise((r) => setTimeout(r, 100));
      }
      await log.close();
      await store.close();
      expect(out).toContain('"subject":"followed"');
      const first = JSON.parse(out.split("\n")[0]!) as { kind: string; outcome: string };
      expect(first).toMatchObject({ kind: "decision", outcome: "deny" });
    } finally {
      child.kill("SIGTERM");
    }
  });
});
