/**
 * zt's own pages and the sign-in form behind them, reviewed as an attacker would, over
 * real sockets and in a real headless Chromium: the sign-in body is read exactly (a
 * field sent twice, or bytes that are not UTF-8, are refused rather than guessed at),
 * and the pages' CSP allows no inline style or script beyond zt's own stylesheet.
 */
import { describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser, ConsoleMessage } from "playwright-core";
import { launchChromium } from "./helpers/chromium.js";
import { request, type ClientResponse } from "./helpers/http-client.js";
import { oathtoolCode } from "./helpers/totp-code.js";
import { appBehindPepForSuite } from "./pep-fixture.js";

const HOST = "app.localhost";

describe("zt's pages and sign-in form, adversarial review", () => {
  const app = appBehindPepForSuite(HOST, { mfa: { max_failures: 100 } });

  const origin = () => `http://${HOST}:${app.zt.port}`;
  const post = (body: string | Buffer, type: string): Promise<ClientResponse> =>
    request(app.zt.port, {
      host: `${HOST}:${app.zt.port}`,
      path: "/.zt/login",
      method: "POST",
      headers: { origin: origin(), "content-type": type },
      body: body as string,
    });
  const form = (body: string | Buffer) => post(body, "application/x-www-form-urlencoded");

  it("refuses a sign-in form that sends a field twice (which one was meant is a guess), before any credential is checked", async () => {
    const alice = await app.zt.addUser("alice", ["eng"]);
    const pw = encodeURIComponent(alice.password);
    for (const [body, field] of [
      [`username=mallory&password=${pw}&totp=123456&username=alice`, "username"],
      [`username=alice&password=x&password=${pw}&totp=123456`, "password"],
      [`username=alice&password=${pw}&totp=123456&totp=654321`, "totp"],
      [`username=alice&password=${pw}&totp=123456&rd=/a&rd=/b`, "rd"],
    ] as const) {
      const r = await form(body);
      expect(r.status, `${field}: ${r.body}`).toBe(400);
      expect(r.json()).toMatchObject({ error: { code: "ZT_BAD_REQUEST", field } });
    }
  });

  it("refuses a sign-in body that is not UTF-8, never reading the bytes as U+FFFD (which would match a password holding it)", async () => {
    // U+FFFD is a character a password may hold; invalid bytes decoded leniently become it.
    const una = await app.zt.addUser("una", ["eng"]);
    await app.zt.services.identity.setPassword("una", "una-\uFFFD-correct-horse-battery");
    const code = oathtoolCode(una.totpSecret);
    // Percent-encoded bytes that are no UTF-8 (0xFF), where U+FFFD is in the password.
    const encoded = await form(
      `username=una&password=una-%FF-correct-horse-battery&totp=${code}&rd=/`,
    );
    expect(encoded.headers["set-cookie"], "signed in with the wrong bytes").toBeUndefined();
    expect(encoded.status, encoded.body).toBe(400);
    expect(encoded.json()).toMatchObject({ error: { code: "ZT_BAD_REQUEST", field: "password" } });
    // The same byte sent raw, in a form and in JSON.
    const rawForm = await form(
      Buffer.concat([
        Buffer.from("username=una&password=una-"),
        Buffer.from([0xff]),
        Buffer.from(`-correct-horse-battery&totp=${code}`),
      ]),
    );
    expect(rawForm.status, rawForm.body).toBe(400);
    expect(rawForm.json()).toMatchObject({ error: { code: "ZT_BAD_REQUEST" } });
    const rawJson = await post(
      Buffer.concat([
        Buffer.from('{"username":"una","password":"una-'),
        Buffer.from([0xff]),
        Buffer.from(`-correct-horse-battery","totp":"${code}"}`),
      ]),
      "application/json",
    );
    expect(rawJson.status, rawJson.body).toBe(400);
    expect(rawJson.json()).toMatchObject({ error: { code: "ZT_BAD_REQUEST" } });
    // The right password, as a browser sends it (UTF-8, percent-encoded), still signs in.
    const ok = await form(
      `username=una&password=${encodeURIComponent("una-\uFFFD-correct-horse-battery")}&totp=${code}&rd=/`,
    );
    expect(ok.status, ok.body).toBe(303);
    expect(ok.headers["set-cookie"]?.[0]).toMatch(/^zt_session=/);
  });

  it("serves its pages with a CSP that allows no inline style or script, and Chromium still applies zt's stylesheet through a whole sign-in", async () => {
    const login = await request(app.zt.port, { host: HOST, path: "/.zt/login" });
    const csp = String(login.headers["content-security-policy"]);
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).toMatch(/(^|; )style-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
    expect(csp).toMatch(/(^|; )base-uri 'none'(;|$)/);
    const vera = await app.zt.addUser("vera", ["eng"]);
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const page = await browser.newPage();
      const console: string[] = [];
      page.on("console", (m: ConsoleMessage) => console.push(`${m.type()}: ${m.text()}`));
      await page.goto(`${origin()}/hello`);
      await page.waitForURL(/\/\.zt\/login\?rd=%2Fhello$/);
      // zt's stylesheet ran: the button has the accent colour, not the browser's grey.
      const accent = () =>
        page.evaluate<string>(
          "getComputedStyle(document.querySelector('button[type=submit]')).backgroundColor",
        );
      await expect(accent()).resolves.toBe("rgb(36, 86, 216)");
      await page.fill("#username", "vera");
      await page.fill("#password", vera.password);
      await page.fill("#totp", oathtoolCode(vera.totpSecret));
      await Promise.all([page.waitForURL(`${origin()}/hello`), page.click("button[type=submit]")]);
      expect(app.upstream.seen.map((s) => s.url)).toContain("/hello");
      expect(console.filter((m) => /Content Security Policy|Refused to/i.test(m))).toEqual([]);
    } finally {
      await browser?.close();
    }
  });

  it("sign-in page: Chromium logs no error on it, and takes a code typed as apps show it (`123 456`) or a backup code with a space", async () => {
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("console", (m: ConsoleMessage) => {
        if (m.type() === "error") errors.push(m.text());
      });
      await page.goto(`${origin()}/.zt/login`);
      await page.fill("#username", "someone");
      await page.fill("#password", "some password");
      for (const code of ["123 456", "k7mqa 2xw4d", "K7MQA-2XW4D"]) {
        await page.fill("#totp", code);
        // The server reads these (docs/identity.md): the browser must not refuse to send them.
        await expect(
          page.evaluate<boolean>("document.querySelector('form').checkValidity()"),
          code,
        ).resolves.toBe(true);
      }
      expect(errors).toEqual([]);
    } finally {
      await browser?.close();
    }
  });

  it("refuses login CSRF and logout CSRF from a same-site sibling's page in Chromium (its Lax cookie is sent; the Origin check stops it)", async () => {
    const mallory = await app.zt.addUser("mallory", ["eng"]);
    await app.zt.addUser("victor", ["eng"]);
    // The attacker's page: on a sibling host of the same site (an app of the site, say),
    // a form that posts itself to zt as soon as it loads.
    let next = "";
    const evil = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(next);
    });
    await new Promise<void>((r) => evil.listen(0, "127.0.0.1", () => r()));
    const evilUrl = `http://evil.${HOST}:${(evil.address() as AddressInfo).port}/`;
    const autoPost = (action: string, fields: Record<string, string>) =>
      `<!doctype html><form method="post" action="${origin()}${action}">${Object.entries(fields)
        .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`)
        .join("")}</form><script>document.forms[0].submit()</script>`;
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      // Login CSRF: the victim's browser would be signed in as the attacker.
      const context = await browser.newContext();
      const page = await context.newPage();
      next = autoPost("/.zt/login", {
        username: "mallory",
        password: mallory.password,
        totp: oathtoolCode(mallory.totpSecret),
        rd: "/",
      });
      await Promise.all([page.waitForURL(`${origin()}/.zt/login`), page.goto(evilUrl)]);
      await expect(page.locator("body").textContent()).resolves.toContain("ZT_CSRF");
      expect(await context.cookies(origin())).toEqual([]);
      // Logout CSRF: the victim's session must survive the attacker's sign-out form.
      const s = await app.zt.session("victor");
      await context.addCookies([
        { name: "zt_session", value: s.token, domain: HOST, path: "/", sameSite: "Lax" },
      ]);
      next = autoPost("/.zt/logout", {});
      const sent = page.waitForRequest((r) => r.url() === `${origin()}/.zt/logout`);
      await Promise.all([page.waitForURL(`${origin()}/.zt/logout`), page.goto(evilUrl)]);
      // Same site: Chromium did send the Lax cookie along; only the Origin check refused.
      const headers = await (await sent).allHeaders();
      expect(headers["cookie"]).toContain(s.token);
      expect(headers["origin"]).toBe(new URL(evilUrl).origin);
      await expect(page.locator("body").textContent()).resolves.toContain("ZT_CSRF");
      const still = await request(app.zt.port, {
        host: HOST,
        path: "/after",
        headers: { cookie: s.cookie, accept: "application/json" },
      });
      expect(still.status, still.body).toBe(200);
      // The same form from zt's own origin does sign out (the check is not refusing all).
      await page.goto(`${origin()}/.zt/login`);
      const [signedOut] = await Promise.all([
        page.waitForResponse(`${origin()}/.zt/logout`),
        page.evaluate(`(() => {
          const f = document.createElement("form");
          f.method = "post";
          f.action = "/.zt/logout";
          document.body.append(f);
          f.submit();
        })()`),
      ]);
      expect(signedOut.status()).toBe(303);
      const after = await request(app.zt.port, {
        host: HOST,
        path: "/after",
        headers: { cookie: s.cookie, accept: "application/json" },
      });
      expect(after.json()).toMatchObject({ error: { reason: "session-revoked" } });
    } finally {
      await browser?.close();
      evil.close();
    }
  });
});

describe("signing in after session.cookie_domain was set", () => {
  const app = appBehindPepForSuite(HOST, { session: { cookie_domain: HOST } });

  it("replaces the browser's host-only cookie from before, in Chromium: the new sign-in lands on the app, not on a two-cookie refusal", async () => {
    const origin = `http://${HOST}:${app.zt.port}`;
    const wren = await app.zt.addUser("wren", ["eng"]);
    const old = await app.zt.session("wren");
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const context = await browser.newContext();
      // Signed in before cookie_domain was set: the cookie is the host's own.
      await context.addCookies([{ name: "zt_session", value: old.token, url: origin }]);
      const page = await context.newPage();
      await page.goto(`${origin}/.zt/login?rd=%2Fback`);
      await page.fill("#username", "wren");
      await page.fill("#password", wren.password);
      await page.fill("#totp", oathtoolCode(wren.totpSecret));
      const [answer] = await Promise.all([
        page.waitForResponse(`${origin}/back`),
        page.click("button[type=submit]"),
      ]);
      expect(answer.status(), await answer.text()).toBe(200);
      const jar = await context.cookies(origin);
      expect(jar.map((c) => [c.name, c.domain])).toEqual([["zt_session", `.${HOST}`]]);
    } finally {
      await browser?.close();
    }
  });
});
