/**
 * The control-plane API behind a reverse proxy: the real nginx on loopback, with
 * `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`, in front of `zt up`'s
 * API. With `api.trusted_proxies` naming nginx's address, every use of the caller's
 * address (audit records, the `api-ip` jail and the ban it enforces, `context.source_ip`
 * of `ssh:sign`) is the client's own; by default (no setting) no X-Forwarded-For is read,
 * forged or not. A reload changes who is trusted and who the jails never ban together.
 * Clients connect from distinct loopback addresses (127.0.0.x stand for distinct hosts);
 * SQLite.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { pkiService } from "../src/pki/index.js";
import { nginxMain } from "../bench/front-proxies.js";
import { requestFrom, type ClientResponse } from "./helpers/http-client.js";
import { opensslRequest } from "./helpers/tls.js";
import { auditRows } from "./helpers/audit-rows.js";
import { freePort } from "./helpers/free-port.js";
import { writeConfig } from "./helpers/zt-process.js";
import { engineConfigYaml, sqliteEngine, type EngineTarget } from "./store-fixture.js";
import { addUsers, runUpInProcess } from "./helpers/zt-up-in-process.js";
import { testSession } from "./helpers/test-session.js";

/** ssh:sign for eng, only from 127.0.0.5: the policy sees the address clientIp gives. */
const POLICIES = `
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context has source_ip && context.source_ip.isInRange(ip("127.0.0.5/32")) };
`;

const RUN_AS_ROOT = process.getuid?.() === 0;

function nginxBinary(): string {
  for (const n of ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"])
    if (existsSync(n)) return n;
  throw new Error("nginx is not installed (CI installs the Debian package nginx)");
}

interface Nginx {
  port: number;
  stop(): Promise<void>;
}

/**
 * The real nginx on 127.0.0.1, proxying everything to the API at 127.0.0.1:`api` from
 * 127.0.0.9 (`proxy_bind`): a proxy on "another host", not in the top-level
 * trusted_proxies (the PEP's, loopback by default).
 */
async function startNginx(dir: string, api: number): Promise<Nginx> {
  const port = await freePort();
  mkdirSync(join(dir, "tmp"), { recursive: true });
  const http = `
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${api};
      proxy_bind 127.0.0.9;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }`;
  writeFileSync(join(dir, "nginx.conf"), nginxMain({ dir, runAsRoot: RUN_AS_ROOT, http }));
  const g = `daemon off; pid ${dir}/nginx.pid; error_log stderr;`;
  const child: ChildProcess = spawn(
    nginxBinary(),
    ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr", "-g", g],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}:\n${out}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (up) break;
    if (i >= 300) throw new Error(`nginx never listened on ${port}:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

interface Suite {
  zt: RunningZt;
  nginx: Nginx;
  dir: string;
  configPath: string;
  aliceToken: string;
  pub: string;
  csr: string;
}

/** `zt up` with `extra` in zt.yaml, alice in eng, a key to sign and a CSR to join with, nginx. */
async function startSuite(target: EngineTarget, extra: string[]): Promise<Suite> {
  const dir = target.storeOptions.dataDir;
  const yaml = engineConfigYaml(
    target,
    [
      "trust_domain: xff.test",
      // Loopback is allow-listed by default; here 127.0.0.x stand for real clients.
      "alerts:",
      "  allow_list: { ips: [] }",
      ...extra,
      "",
    ].join("\n"),
  );
  const configPath = writeConfig(dir, yaml, { "ssh.cedar": POLICIES });
  const zt = await runUpInProcess(configPath, new ManualClock(Date.now()));
  const users = await addUsers(zt, [["alice", ["eng"]]]);
  const aliceToken = (await testSession(zt.services.sessions, users["alice"]!.id)).token;
  await (await pkiService(zt.ctx)).addRegistration({ spiffeId: "spiffe://xff.test/w" }, "t");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
  const pub = readFileSync(join(dir, "id.pub"), "utf8");
  const csr = opensslRequest({
    keyOut: join(dir, "w.key"),
    out: join(dir, "w.csr"),
    subj: "/CN=w",
    san: "URI:spiffe://xff.test/w",
    csr: true,
  });
  const nginx = await startNginx(join(dir, "nginx"), zt.apiAddress.port);
  return { zt, nginx, dir, configPath, aliceToken, pub, csr };
}

/** A request from the loopback address `from` to `port` (nginx, or the API directly). */
const send = requestFrom;

function sshSign(s: Suite, port: number, from: string, headers: Record<string, string> = {}) {
  return send(
    port,
    from,
    "POST",
    "/api/v1/ssh/sign",
    { public_key: s.pub, principals: ["alice"], host_group: "prod" },
    { authorization: `Bearer ${s.aliceToken}`, ...headers },
  );
}

function join_(s: Suite, port: number, from: string, token: string, xff?: string) {
  return send(
    port,
    from,
    "POST",
    "/api/v1/svid",
    { csr: s.csr },
    { authorization: `Bearer ${token}`, ...(xff === undefined ? {} : { "x-forwarded-for": xff }) },
  );
}

/** The source address of every `ssh.sign` record, oldest first. */
async function signSources(s: Suite): Promise<(string | null)[]> {
  return (await auditRows(s.zt.ctx, "ssh.sign", ["source_ip"])).map((r) => r.source_ip);
}

describe("the API behind nginx with api.trusted_proxies naming it", () => {
  let target: EngineTarget;
  let s: Suite;

  beforeAll(async () => {
    target = await sqliteEngine.fresh();
    s = await startSuite(target, ["api:", '  trusted_proxies: ["127.0.0.9/32"]']);
  }, 60_000);

  afterAll(async () => {
    await s?.nginx.stop();
    await s?.zt.close();
    await target?.cleanup();
  });

  it("names each client's own address in the audit record and in ssh:sign's context.source_ip: 127.0.0.5 is signed (the policy allows only it), 127.0.0.6 is denied, through the same nginx", async () => {
    const before = (await signSources(s)).length;
    const five = await sshSign(s, s.nginx.port, "127.0.0.5");
    expect(five.status, five.body).toBe(201);
    const six = await sshSign(s, s.nginx.port, "127.0.0.6");
    expect(six.status, six.body).toBe(403);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.5", "127.0.0.6"]);
  });

  it("ignores what a client writes into X-Forwarded-For itself: nginx appends the real peer, which is the address used", async () => {
    const before = (await signSources(s)).length;
    const r = await sshSign(s, s.nginx.port, "127.0.0.6", { "x-forwarded-for": "127.0.0.5" });
    expect(r.status, r.body).toBe(403);
    const garbage = await sshSign(s, s.nginx.port, "127.0.0.5", { "x-forwarded-for": "nonsense" });
    expect(garbage.status, garbage.body).toBe(201);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.6", "127.0.0.5"]);
  });

  it("reads no X-Forwarded-For from a peer that is not a trusted proxy, and falls back to the proxy's own address on a malformed entry from a trusted one", async () => {
    const before = (await signSources(s)).length;
    // Directly from 127.0.0.7 (not a trusted proxy): the forged header is not read.
    const forged = await sshSign(s, s.zt.apiAddress.port, "127.0.0.7", {
      "x-forwarded-for": "127.0.0.5",
    });
    expect(forged.status, forged.body).toBe(403);
    // From 127.0.0.9 (trusted) with an entry that is no address: the peer, never a guess.
    const bad = await sshSign(s, s.zt.apiAddress.port, "127.0.0.9", {
      "x-forwarded-for": "127.0.0.5, not-an-address",
    });
    expect(bad.status, bad.body).toBe(403);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.7", "127.0.0.9"]);
  });

  it("bans a join-token guesser behind nginx by its own address (the api-ip jail): its next request through nginx is refused ZT_BANNED, another client through the same nginx is served; the proxy itself is never banned", async () => {
    // Guesses the proxy's own address stands for (an entry that is no address): counted,
    // but an api.trusted_proxies address is never banned, as a trusted_proxies one is not.
    for (let i = 0; i < 10; i++) {
      const r = await join_(s, s.zt.apiAddress.port, "127.0.0.9", `ztjoin_proxy${i}`, "junk");
      expect(r.status, r.body).toBe(401);
    }
    for (let i = 0; i < 10; i++) {
      const r = await join_(s, s.nginx.port, "127.0.0.5", `ztjoin_guess${i}`);
      expect(r.status, r.body).toBe(401);
    }
    let banned: ClientResponse | undefined;
    for (let i = 0; i < 400 && banned === undefined; i++) {
      const r = await send(s.nginx.port, "127.0.0.5", "GET", "/pki/bundle");
      if (r.status === 403) banned = r;
      else await new Promise((res) => setTimeout(res, 25));
    }
    expect(banned?.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
    const bans = (await auditRows(s.zt.ctx, "ban.add", ["source_ip", "reason"])).map((b) => [
      b.source_ip,
      b.reason,
    ]);
    expect(bans).toEqual([["127.0.0.5", "api-ip"]]);
    const token = await (await pkiService(s.zt.ctx)).createJoinToken("spiffe://xff.test/w", "t");
    expect((await join_(s, s.nginx.port, "127.0.0.6", token.token)).status).toBe(201);
    const alerts = await auditRows(s.zt.ctx, "alert", ["data"]);
    expect(alerts.map((a) => a.data).join("\n")).toContain("ip:127.0.0.9 not banned");
    expect((await send(s.nginx.port, "127.0.0.6", "GET", "/pki/bundle")).status).toBe(200);
  });

  it("takes a changed api.trusted_proxies on reload: with the setting removed, every caller through nginx is nginx's address; put back, the client's again", async () => {
    const withSetting = readFileSync(s.configPath, "utf8");
    const without = withSetting.replace(/^api:\n {2}trusted_proxies:.*\n/m, "");
    expect(without).not.toBe(withSetting);
    writeFileSync(s.configPath, without);
    await s.zt.reload();
    const before = (await signSources(s)).length;
    expect((await sshSign(s, s.nginx.port, "127.0.0.6")).status).toBe(403);
    writeFileSync(s.configPath, withSetting);
    await s.zt.reload();
    expect((await sshSign(s, s.nginx.port, "127.0.0.6")).status).toBe(403);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.9", "127.0.0.6"]);
  });
});

describe("the API without api.trusted_proxies (the default)", () => {
  let target: EngineTarget;
  let s: Suite;

  beforeAll(async () => {
    target = await sqliteEngine.fresh();
    s = await startSuite(target, []);
  }, 60_000);

  afterAll(async () => {
    await s?.nginx.stop();
    await s?.zt.close();
    await target?.cleanup();
  });

  it("records a direct client with a forged X-Forwarded-For as its real peer address", async () => {
    const r = await sshSign(s, s.zt.apiAddress.port, "127.0.0.6", {
      "x-forwarded-for": "203.0.113.9",
    });
    expect(r.status, r.body).toBe(403);
    // Even from 127.0.0.1, a trusted_proxies entry for the PEP: the API reads no header.
    const lo = await sshSign(s, s.zt.apiAddress.port, "127.0.0.1", {
      "x-forwarded-for": "127.0.0.5",
    });
    expect(lo.status, lo.body).toBe(403);
    expect(await signSources(s)).toEqual(["127.0.0.6", "127.0.0.1"]);
  });

  it("records every caller through nginx as nginx's address, and ssh:sign's policy sees only that", async () => {
    const before = (await signSources(s)).length;
    expect((await sshSign(s, s.nginx.port, "127.0.0.5")).status).toBe(403);
    expect((await sshSign(s, s.nginx.port, "127.0.0.6")).status).toBe(403);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.9", "127.0.0.9"]);
  });
});

/** The newest audit record's seq: what `jailVerdict` looks after. */
async function auditHead(s: Suite): Promise<number> {
  await s.zt.ctx.audit.flush();
  const r = await s.zt.ctx.store.db
    .selectFrom("audit_events")
    .select((eb) => eb.fn.max("seq").as("seq"))
    .executeTakeFirst();
  return Number(r?.seq ?? 0);
}

/**
 * What the `api-ip` jail made of the guesses from `ip` recorded after `afterSeq`, once it
 * has judged them: `banned` (a `ban.add` names it) or `alerted` (an alert says it is not
 * banned, as a trusted proxy); `none` if neither came. The rules run in the background,
 * after the audit write: this polls for their record.
 */
async function jailVerdict(
  s: Suite,
  ip: string,
  afterSeq: number,
): Promise<"banned" | "alerted" | "none"> {
  for (let i = 0; i < 400; i++) {
    await s.zt.ctx.audit.flush();
    const rows = await s.zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["kind", "source_ip", "data"])
      .where("seq", ">", afterSeq)
      .where("kind", "in", ["ban.add", "alert"])
      .execute();
    if (rows.some((r) => r.kind === "ban.add" && r.source_ip === ip)) return "banned";
    if (rows.some((r) => r.kind === "alert" && r.data.includes(`ip:${ip} not banned`)))
      return "alerted";
    await new Promise((res) => setTimeout(res, 25));
  }
  return "none";
}

/** Ten join-token guesses (the `api-ip` jail's maxretry) straight to the API from `from`. */
async function guessJoinTokens(s: Suite, from: string, tag: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const r = await join_(s, s.zt.apiAddress.port, from, `ztjoin_${tag}${i}`);
    expect(r.status, r.body).toBe(401);
  }
}

describe("the jails' never-ban list follows a reload of trusted_proxies and api.trusted_proxies", () => {
  let target: EngineTarget;
  let s: Suite;
  let startYaml: string;
  // 127.0.0.8 is a PEP trusted proxy at start; nginx (127.0.0.9) is not trusted by the API.
  const PEP_PROXIES = 'trusted_proxies: ["127.0.0.1/32", "::1/128", "127.0.0.8/32"]';

  beforeAll(async () => {
    target = await sqliteEngine.fresh();
    s = await startSuite(target, [PEP_PROXIES]);
    startYaml = readFileSync(s.configPath, "utf8");
  }, 60_000);

  afterAll(async () => {
    await s?.nginx.stop();
    await s?.zt.close();
    await target?.cleanup();
  });

  it("alerts instead of banning a proxy that a reload added to api.trusted_proxies, as it trusts its X-Forwarded-For", async () => {
    writeFileSync(s.configPath, `${startYaml}api:\n  trusted_proxies: ["127.0.0.9/32"]\n`);
    await s.zt.reload();
    // The trust change took: through nginx, the client's own address is the source.
    const before = (await signSources(s)).length;
    expect((await sshSign(s, s.nginx.port, "127.0.0.5")).status).toBe(201);
    expect((await signSources(s)).slice(before)).toEqual(["127.0.0.5"]);
    // Guesses the proxy itself stands for (no X-Forwarded-For): counted, never banned.
    const head = await auditHead(s);
    await guessJoinTokens(s, "127.0.0.9", "nginx");
    expect(await jailVerdict(s, "127.0.0.9", head)).toBe("alerted");
    expect((await send(s.zt.apiAddress.port, "127.0.0.9", "GET", "/pki/bundle")).status).toBe(200);
    expect((await sshSign(s, s.nginx.port, "127.0.0.5")).status).toBe(201);
  });

  it("bans an address that a reload removed from trusted_proxies: exempt at start, bannable after", async () => {
    const atStart = await auditHead(s);
    await guessJoinTokens(s, "127.0.0.8", "pep-proxy-a");
    expect(await jailVerdict(s, "127.0.0.8", atStart)).toBe("alerted");
    writeFileSync(
      s.configPath,
      startYaml.replace(PEP_PROXIES, 'trusted_proxies: ["127.0.0.1/32", "::1/128"]'),
    );
    await s.zt.reload();
    const afterReload = await auditHead(s);
    await guessJoinTokens(s, "127.0.0.8", "pep-proxy-b");
    expect(await jailVerdict(s, "127.0.0.8", afterReload)).toBe("banned");
    const r = await send(s.zt.apiAddress.port, "127.0.0.8", "GET", "/pki/bundle");
    expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
  });
});
