/**
 * `ssh:sign` through a running `zt up` is decided by the policy set in force: a policy
 * change picked up by the reload applies to the next signing request (it used to be
 * decided by a copy loaded once, never reloaded), and the user entity carries the same
 * attributes as at the PEP, so a forbid on `principal.email` applies (on SSH the user had
 * no `email`, so `principal has email` was false and the forbid never matched). Real `zt up`, real CLI, real sign-in
 * with an oathtool code, real API (plain HTTP on loopback).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { login } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";

const POLICY = `@id("ssh-eng")
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"prod");

@id("no-contractors")
@reason("contractors-no-ssh")
forbid (principal, action == Action::"ssh:sign", resource)
when { principal is User && principal has email && principal.email like "*@contractor.example" };
`;

interface Enrolled {
  totp_secret: string;
}

describe("ssh:sign against the policy set in force", () => {
  let dir: string;
  let config: string;
  let zt: UpProcess;
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    dir = tempDir();
    config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: sshlive.test
routes:
  - name: app
    from: http://app.localhost
    to: http://127.0.0.1:9
policies: ./policies
`,
      { "main.cedar": POLICY },
    );
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    const enrolled: Record<string, Enrolled> = {};
    for (const [name, email] of [
      ["alice", "alice@corp.example"],
      ["carl", "carl@contractor.example"],
    ] as const) {
      const r = await runZt(
        ["--config", config, "user", "add", name, "--group", "eng", "--email", email].concat([
          "--password-stdin",
          "--json",
          "--no-qr",
        ]),
        { env, input: `pw-${name}-correct-horse\n` },
      );
      expect(r.code, r.stderr).toBe(0);
      enrolled[name] = JSON.parse(r.stdout) as Enrolled;
    }
    zt = await startZtUp(["--config", config, "up"], { env });
    const port = Number(new URL(zt.pepUrl).port);
    for (const name of ["alice", "carl"]) {
      const code = execFileSync("oathtool", ["--totp", "-b", enrolled[name]!.totp_secret])
        .toString()
        .trim();
      const l = await login(port, "app.localhost", name, `pw-${name}-correct-horse`, code);
      expect(l.status, JSON.stringify(l.body)).toBe(200);
      tokens[name] = l.cookie!.split("=")[1]!;
    }
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
  });

  afterAll(async () => {
    await zt?.stop();
  });

  /** `zt ssh sign --server` as the user's session. */
  function sign(user: string) {
    return runZt(
      ["ssh", "sign", "--key", join(dir, "id.pub"), "--principal", user, "--host-group", "prod"]
        .concat(["--server", zt.apiUrl])
        .concat(["--json"]),
      { env: { ZT_SESSION_TOKEN: tokens[user]! }, cwd: dir },
    );
  }

  it("applies a forbid on the user's e-mail, as the PEP would", async () => {
    const ok = await sign("alice");
    expect(ok.code, ok.stderr).toBe(0);
    const denied = await sign("carl");
    expect(denied.code).toBe(77);
    expect(denied.stderr).toMatch(/ZT_POLICY_DENIED/);
    expect(denied.stderr).toMatch(/contractors-no-ssh/);
  });

  it("applies a policy change as soon as zt up has reloaded it", async () => {
    expect((await sign("alice")).code).toBe(0);
    writeFileSync(
      join(dir, "policies", "freeze.cedar"),
      `@id("ssh-freeze")\n@reason("ssh-freeze")\nforbid (principal, action == Action::"ssh:sign", resource == HostGroup::"prod");\n`,
    );
    // Wait on what zt says (the reload), not on time.
    for (let i = 0; i < 200 && !/policies reloaded \(3 policies\)/.test(zt.output()); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(zt.output()).toMatch(/policies reloaded \(3 policies\)/);
    const frozen = await sign("alice");
    expect(frozen.code).toBe(77);
    expect(frozen.stderr).toMatch(/ssh-freeze/);
  });
});
