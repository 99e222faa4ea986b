/**
 * Every JSON refusal zt's PEP writes — a policy 403, a 401, forward-auth's 401 and 403,
 * refusals before any decision, refused upgrades, requests Node's parser refuses — is sent
 * with `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`: a refusal names a
 * user and a decision, so no shared cache may keep it, and no browser may read it as
 * another type. Raw sockets, so the headers are the ones on the wire. (The control-plane
 * API's refusals: api-edge-errors.test.ts; behind nginx, Caddy and HAProxy:
 * forward-auth-proxies.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { raw } from "./pep-fixture.js";
import { startPepAppRoute, type PepAppRoute } from "./helpers/pep-app-route.js";

const HOST = "app.localhost";
const POLICY = `permit (principal, action, resource) when { principal in Group::"eng" };`;
const WS =
  "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/** The head of a raw answer, lower case, to look header lines up in. */
function headOf(text: string): string {
  return text.slice(0, text.indexOf("\r\n\r\n") + 2).toLowerCase();
}

describe("the PEP's JSON refusals are never cached and never sniffed", () => {
  let app: PepAppRoute;
  let bob: string;

  beforeAll(async () => {
    app = await startPepAppRoute({ host: HOST, policies: POLICY, websockets: true });
    await app.pep.addUser("bob", ["ops"]);
    bob = (await app.pep.session("bob")).cookie;
  });
  afterAll(async () => {
    await app?.close();
  });

  const authz = (original: string, extra = "") =>
    `GET /.zt/authz HTTP/1.1\r\nHost: zt.internal\r\nX-Original-URL: http://${HOST}${original}\r\nX-Original-Method: GET\r\nAccept: application/json\r\n${extra}\r\n`;

  const cases: () => { name: string; request: string; status: number }[] = () => [
    {
      name: "a policy denial (403)",
      request: `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${bob}\r\nAccept: application/json\r\n\r\n`,
      status: 403,
    },
    {
      name: "no session (401)",
      request: `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nAccept: application/json\r\n\r\n`,
      status: 401,
    },
    {
      name: "a refusal before any decision (400 path-ambiguous)",
      request: `GET /public/..%2fadmin HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
      status: 400,
    },
    {
      name: "a request Node's parser refuses (400)",
      request: `POST /x HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n`,
      status: 400,
    },
    {
      name: "a refused WebSocket upgrade (400 path-ambiguous)",
      request: `GET /a/%252e%252e/b HTTP/1.1\r\nHost: ${HOST}\r\n${WS}\r\n`,
      status: 400,
    },
    {
      name: "a denied WebSocket upgrade (403)",
      request: `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${bob}\r\n${WS}\r\n`,
      status: 403,
    },
    { name: "forward-auth: no session (401)", request: authz("/x"), status: 401 },
    {
      name: "forward-auth: a policy denial (403)",
      request: authz("/x", `Cookie: ${bob}\r\n`),
      status: 403,
    },
    {
      name: "forward-auth: no route (403)",
      request: authz("/x").replace(`http://${HOST}/x`, "http://nowhere.localhost/x"),
      status: 403,
    },
  ];

  it("each carries Cache-Control: no-store and X-Content-Type-Options: nosniff", async () => {
    for (const c of cases()) {
      const r = await raw(app.pep.port, [c.request], {
        until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}"),
      });
      expect(r.status, `${c.name}: ${r.text}`).toBe(c.status);
      const head = headOf(r.text);
      expect(head, c.name).toContain("\r\ncontent-type: application/json");
      expect(head, c.name).toContain("\r\ncache-control: no-store\r\n");
      expect(head, c.name).toContain("\r\nx-content-type-options: nosniff\r\n");
    }
    expect(app.upstream.seen).toHaveLength(0);
  });
});
