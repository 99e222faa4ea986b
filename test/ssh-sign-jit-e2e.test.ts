/**
 * Just-in-time SSH access end to end, with real processes: `zt up`, the real CLI
 * (`zt access request|approve|revoke`, `zt breakglass`, `zt ssh sign` over the API with a
 * session and against the local store), a real sign-in with an oathtool code, keys and
 * certificates read by the real ssh-keygen. Before, `ssh:sign` was decided with no grants
 * and no break-glass, so none of this could allow anything.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { login } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { waitFor } from "./store-fixture.js";

const POLICY = `@id("prod-ssh-with-grant")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context.grants.contains("prod") };

@id("breakglass")
@reason("breakglass")
permit (principal, action, resource)
when { context.breakglass };
`;

describe("zt access for an SSH host group, end to end", () => {
  let dir: string;
  let config: string;
  let zt: UpProcess;
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  let token = "";

  const PASSWORD = "pw-alice-correct-horse";
  const zt_ = (args: string[], extra: Record<string, string> = {}, input?: string) =>
    runZt(["--config", config, ...args], {
      env: { ...env, ...extra },
      cwd: dir,
      ...(input !== undefined ? { input } : {}),
    });

  beforeAll(async () => {
    dir = tempDir();
    config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: sshjit.test
routes:
  - name: app
    from: http://app.localhost
    to: http://127.0.0.1:9
policies: ./policies
access:
  resources:
    'HostGroup::"prod"': { approvers: sre, max_ttl: 2h }
  breakglass:
    accounts: [oncall]
    resources: ['HostGroup::"prod"']
`,
      { "main.cedar": POLICY },
    );
    expect((await zt_(["init"])).code).toBe(0);
    let secret = "";
    for (const [name, group] of [
      ["alice", "eng"],
      ["sam", "sre"],
      ["oncall", "eng"],
    ] as const) {
      const r = await zt_(
        ["user", "add", name, "--group", group, "--password-stdin", "--json", "--no-qr"],
        {},
        `${name === "alice" ? PASSWORD : `pw-${name}-correct-horse`}\n`,
      );
      expect(r.code, r.stderr).toBe(0);
      if (name === "alice") secret = (JSON.parse(r.stdout) as { totp_secret: string }).totp_secret;
    }
    zt = await startZtUp(["--config", config, "up"], { env });
    const port = Number(new URL(zt.pepUrl).port);
    const code = execFileSync("oathtool", ["--totp", "-b", secret]).toString().trim();
    const l = await login(port, "app.localhost", "alice", PASSWORD, code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    token = l.cookie!.split("=")[1]!;
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
  }, 120_000);

  afterAll(async () => {
    await zt?.stop();
  });

  /** `zt ssh sign --server` as alice's session. */
  const signViaApi = () =>
    zt_(
      ["ssh", "sign", "--key", join(dir, "id.pub"), "--principal", "alice"].concat([
        "--host-group",
        "prod",
        "--ttl",
        "8h",
        "--server",
        zt.apiUrl,
        "--json",
      ]),
      { ZT_SESSION_TOKEN: token },
    );

  /** `zt ssh sign` on the local store. */
  const signLocally = (user: string) =>
    zt_(
      ["ssh", "sign", "--key", join(dir, "id.pub"), "--principal", user, "--user", user].concat([
        "--host-group",
        "prod",
        "--ttl",
        "8h",
        "--json",
      ]),
    );

  function certValidTo(file: string): { validTo: number; keyId: string } {
    const text = execFileSync("ssh-keygen", ["-L", "-f", file], {
      encoding: "utf8",
      env: { ...process.env, TZ: "UTC" },
    });
    return {
      validTo: Date.parse(`${/Valid: from \S+ to (\S+)/.exec(text)![1]}Z`),
      keyId: /Key ID: "([^"]*)"/.exec(text)![1]!,
    };
  }

  it("refuses, grants, signs within the grant, and refuses again after revoke", async () => {
    const denied = await signViaApi();
    expect(denied.code).toBe(77);
    expect(denied.stderr).toMatch(/ZT_POLICY_DENIED/);
    expect(denied.stderr).toMatch(/no-matching-permit/);
    expect(denied.stderr).toMatch(/decision dec_\w+/);

    const req = await zt_(
      ["access", "request", "--as", "alice", "--resource", 'HostGroup::"prod"'].concat([
        "--reason",
        "INC-42 deploy fix",
        "--ttl",
        "30m",
        "--json",
      ]),
    );
    expect(req.code, req.stderr).toBe(0);
    const id = (JSON.parse(req.stdout) as { id: string }).id;
    const ok = await zt_(["access", "approve", id, "--as", "sam", "--json"]);
    expect(ok.code, ok.stderr).toBe(0);
    const grant = JSON.parse(ok.stdout) as { status: string; resource: string; expires: string };
    expect(grant).toMatchObject({ status: "approved", resource: 'HostGroup::"prod"' });
    const expires = Date.parse(grant.expires);

    const signed = await signViaApi();
    expect(signed.code, signed.stderr).toBe(0);
    const out = JSON.parse(signed.stdout) as { file: string; decision_id: string };
    const cert = certValidTo(out.file);
    expect(cert.validTo).toBeLessThanOrEqual(expires);
    expect(cert.keyId).toContain(`decision=${out.decision_id} grant=${id} `);
    // The sign decision's audit record names the grant (written off the hot path).
    await waitFor(
      async () => (await zt_(["audit", "explain", out.decision_id, "--json"])).code === 0,
      "the ssh.sign audit record",
    );
    const audit = JSON.parse((await zt_(["audit", "explain", out.decision_id, "--json"])).stdout);
    expect(JSON.stringify(audit)).toContain(`"grant":{"id":"${id}"`);

    const local = await signLocally("alice");
    expect(local.code, local.stderr).toBe(0);
    expect(
      certValidTo((JSON.parse(local.stdout) as { file: string }).file).validTo,
    ).toBeLessThanOrEqual(expires);

    expect((await zt_(["access", "revoke", id, "--as", "sam"])).code).toBe(0);
    const after = await signViaApi();
    expect(after.code).toBe(77);
    expect(after.stderr).toMatch(/ZT_POLICY_DENIED/);
    expect(after.stderr).toMatch(/decision dec_\w+/);
    expect((await signLocally("alice")).code).toBe(77);
  }, 120_000);

  it("lets a break-glass account sign for the host group it opened, until the break-glass ends", async () => {
    expect((await signLocally("oncall")).code).toBe(77);
    const bg = await zt_(
      ["breakglass", "--as", "oncall", "--resource", 'HostGroup::"prod"'].concat([
        "--reason",
        "primary down, INC-7",
        "--json",
      ]),
    );
    expect(bg.code, bg.stderr).toBe(0);
    const glass = JSON.parse(bg.stdout) as { id: string; expires: string };
    const signed = await signLocally("oncall");
    expect(signed.code, signed.stderr).toBe(0);
    const cert = certValidTo((JSON.parse(signed.stdout) as { file: string }).file);
    expect(cert.validTo).toBeLessThanOrEqual(Date.parse(glass.expires));
    expect(cert.keyId).toContain(`grant=${glass.id} `);
  }, 60_000);
});
