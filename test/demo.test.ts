/**
 * The demo starts from an empty directory (`zt up --demo`), prints working
 * credentials, and a real headless Chromium signs in with password + TOTP and lands
 * on the app. Chromium is Debian's (/usr/bin/chromium), driven by playwright-core.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as OTPAuth from "otpauth";
import type { Browser } from "playwright-core";
import { launchChromium } from "./helpers/chromium.js";
import { login, request } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, type UpProcess } from "./helpers/zt-process.js";

function code(secret: string, offsetSteps = 0): string {
  return new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret) }).generate({
    timestamp: Date.now() + offsetSteps * 30_000,
  });
}

describe("zt up --demo", () => {
  let dir: string;
  let zt: UpProcess;
  let port: number;
  let password: string;
  let secret: string;

  beforeAll(async () => {
    dir = join(tempDir("zt-demo-"), "demo");
    expect(existsSync(dir)).toBe(false);
    zt = await startZtUp(["up", "--demo", "--demo-dir", dir, "--demo-port", "0"], {
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
    });
    port = Number(new URL(zt.pepUrl).port);
    const out = zt.output();
    password = /Password\s+(\S+)/.exec(out)![1]!;
    secret = /TOTP secret\s+([A-Z2-7]+)/.exec(out)![1]!;
  });

  afterAll(async () => {
    await zt?.stop();
  });

  it("initialises the data directory and prints credentials, an otpauth URI and a QR code", () => {
    const out = zt.output();
    expect(readdirSync(dir)).toEqual(expect.arrayContaining(["zt.yaml", "policies", "data"]));
    expect(out).toMatch(/otpauth:\/\/totp\/[^\s]*secret=/);
    expect(out).toContain("▄"); // the terminal QR code
    expect(out).toMatch(/Open\s+http:\/\/whoami\.localhost:\d+\//);
  });

  it("lets the demo user reach whoami and denies the admin app", async () => {
    const l = await login(port, "whoami.localhost", "demo", password, code(secret));
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    const r = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { cookie: l.cookie!, accept: "application/json" },
    });
    expect(r.status).toBe(200);
    const body = r.json<{ verified: boolean; identity: { sub: string } }>();
    expect(body.verified).toBe(true);
    expect(body.identity.sub).toBe("demo");
    // The same session, another app: the demo policy permits only the sre group there.
    const denied = await request(port, {
      host: "admin.localhost",
      path: "/",
      headers: { cookie: l.cookie!, accept: "application/json" },
    });
    expect(denied.status).toBe(403);
    expect(denied.json<{ error: { decision_id: string } }>().error.decision_id).toMatch(/^dec_/);
    const tail = await runZt(["--config", join(dir, "zt.yaml"), "audit", "tail", "--json"]);
    expect(tail.code, tail.stderr).toBe(0);
    expect(tail.stdout).toContain('"allow"');
    expect(tail.stdout).toContain('"deny"');
  });

  it("signs in from a real browser with password + TOTP and lands on the app", async () => {
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      // A user of its own, so its TOTP codes were never used by the tests above.
      const added = await runZt(
        [
          "--config",
          join(dir, "zt.yaml"),
          "user",
          "add",
          "erin",
          "--group",
          "eng",
          "--password-stdin",
          "--json",
        ],
        {
          input: "erin-browser-password\n",
        },
      );
      expect(added.code, added.stderr).toBe(0);
      const erin = JSON.parse(added.stdout) as { totp_secret: string };
      const page = await browser.newPage();
      await page.goto(`http://whoami.localhost:${port}/`);
      await page.waitForURL(/\/\.zt\/login/);
      await page.fill("#username", "erin");
      await page.fill("#password", "erin-browser-password");
      await page.fill("#totp", code(erin.totp_secret));
      await Promise.all([
        page.waitForURL(`http://whoami.localhost:${port}/`),
        page.click("button[type=submit]"),
      ]);
      await expect(page.locator("h1").textContent()).resolves.toContain("Hello, erin");
      await page.screenshot({ path: join(dir, "browser-landed.png") });
    } finally {
      await browser?.close();
    }
  });
});
