import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { writePrivateFile } from "../core/secure-files.js";
import { makeDirectories } from "../core/make-directories.js";

export const DEMO_USER = "demo";

export const DEMO_POLICY = `// zt demo policies. Edit and save: zt reloads them (an invalid edit is refused and
// the last good set stays in force).

// Engineers may use the whoami app, with MFA in the last hour.
@id("eng-whoami")
@reason("eng-may-use-whoami")
permit (
  principal in Group::"eng",
  action in [Action::"GET", Action::"HEAD", Action::"POST"],
  resource == App::"whoami"
)
when { context.mfa_age_seconds < 3600 };

// The admin app is for the sre group only; everyone else is denied by default.
@id("sre-admin")
permit (
  principal in Group::"sre",
  action,
  resource == App::"admin"
);

// Nobody writes to admin from outside loopback, whatever else allows it.
@id("admin-loopback-only")
@reason("network-not-allowed")
forbid (principal, action, resource == App::"admin")
unless { context.source_ip.isLoopback() };
`;

export function demoConfigYaml(upstreamPort: number): string {
  return `# zt demo configuration (written by \`zt up --demo\`). See docs/configuration.md.
data_dir: ./data
trust_domain: demo.zt.test
listen:
  proxy: "127.0.0.1:8443"
  api: "127.0.0.1:8400"
routes:
  - name: whoami
    from: http://whoami.localhost:8443
    to: http://127.0.0.1:${upstreamPort}
  - name: admin
    from: http://admin.localhost:8443
    to: http://127.0.0.1:${upstreamPort}
policies: ./policies
`;
}

export interface DemoCredentials {
  username: string;
  password: string;
  totp_secret: string;
  totp_uri: string;
  backup_codes: string[];
}

/** Writes the demo folder (config + policies) if it is not there yet. Returns true when created. */
export function ensureDemoFiles(dir: string, upstreamPort: number): boolean {
  const configPath = join(dir, "zt.yaml");
  if (existsSync(configPath)) return false;
  makeDirectories(join(dir, "policies"), 0o700);
  writeFileSync(join(dir, "policies", "demo.cedar"), DEMO_POLICY);
  writeFileSync(configPath, demoConfigYaml(upstreamPort));
  return true;
}

export function demoCredentialsPath(dir: string): string {
  return join(dir, "data", "demo-credentials.json");
}

export function readDemoCredentials(dir: string): DemoCredentials | undefined {
  const p = demoCredentialsPath(dir);
  if (!existsSync(p)) return undefined;
  return JSON.parse(readFileSync(p, "utf8")) as DemoCredentials;
}

export function saveDemoCredentials(dir: string, c: DemoCredentials): void {
  writePrivateFile(demoCredentialsPath(dir), JSON.stringify(c, null, 2));
}

export function randomPassword(): string {
  return randomBytes(12).toString("base64url");
}
