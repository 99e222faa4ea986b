/**
 * Requests the PEP turns away before any decision — ambiguous paths, smuggling-shaped
 * framing, a second Host, no route, forward-auth headers it cannot read — are recorded
 * (`request.refused`) under a decision id that the client gets back, like a denial's:
 * "every request logged" includes the ones probing for a bypass. Raw sockets, so no
 * client library tidies the request up first; the real `zt audit explain` reads them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { queryAudit } from "../src/audit/index.js";
import { AlertEngine, type AlertEvent } from "../src/audit/alerts/alert-engine.js";
import { parseAlertsConfig } from "../src/audit/alerts/alerts-config.js";
import { renderMetrics } from "../src/audit/index.js";
import { toOcsf } from "../src/audit/ocsf.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import { raw } from "./pep-fixture.js";
import { startPepAppRoute, type PepAppRoute } from "./helpers/pep-app-route.js";
import { runZt } from "./helpers/zt-process.js";

const HOST = "app.localhost";
const POLICY = `permit (principal, action, resource);`;

/** The decision id in a raw answer's X-Zt-Decision-Id header (and the same in its body). */
function decisionIdOf(text: string): string {
  const header = /\r\nx-zt-decision-id: (dec_[0-9A-Za-z_-]+)\r\n/i.exec(text)?.[1];
  expect(header, text).toBeDefined();
  const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)) as {
    error: { decision_id?: string; reason?: string };
  };
  expect(body.error.decision_id).toBe(header);
  return header!;
}

describe("refused requests are audited with a decision id", () => {
  let app: PepAppRoute;

  beforeAll(async () => {
    app = await startPepAppRoute({ host: HOST, policies: POLICY, websockets: true });
  });
  afterAll(async () => {
    await app?.close();
  });

  async function refusalRecord(decisionId: string) {
    await app.pep.ctx.audit.flush();
    const rows = await queryAudit(app.pep.ctx.store, { decisionId, limit: 5 });
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row).toMatchObject({
      kind: "request.refused",
      outcome: "deny",
      decision_id: decisionId,
    });
    return { ...row, data: JSON.parse(row.data) as Record<string, unknown> };
  }

  const cases: {
    name: string;
    request: string;
    status: number;
    reason: string;
    target?: string;
  }[] = [
    {
      name: "an encoded slash (path traversal)",
      request: `GET /public/..%2fadmin HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
      status: 400,
      reason: "path-ambiguous",
      target: "/public/..%2fadmin",
    },
    {
      name: "a second Host header",
      request: `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nHost: other.localhost\r\n\r\n`,
      status: 400,
      reason: "host-duplicate",
      target: "/x",
    },
    {
      // Node keeps the first for zt; the app behind could read the other.
      name: "a second Authorization header",
      request: `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nAuthorization: Bearer zt-token\r\nAuthorization: Basic eDp5\r\n\r\n`,
      status: 400,
      reason: "authorization-duplicate",
      target: "/x",
    },
    {
      name: "an upgrade with a second Authorization header",
      request: `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Basic eDp5\r\nAuthorization: Bearer zt-token\r\n\r\n`,
      status: 400,
      reason: "authorization-duplicate",
      target: "/ws",
    },
    {
      name: "a Connection header naming Content-Length (smuggling)",
      request: `POST /x HTTP/1.1\r\nHost: ${HOST}\r\nConnection: content-length\r\nContent-Length: 0\r\n\r\n`,
      status: 400,
      reason: "connection-names-framing",
      target: "/x",
    },
    {
      name: "a host no route serves",
      request: `GET /x HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n`,
      status: 404,
      reason: "no-route",
      target: "/x",
    },
    {
      name: "an upgrade with a traversal path",
      request: `GET /a/%252e%252e/b HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      status: 400,
      reason: "path-ambiguous",
      target: "/a/%252e%252e/b",
    },
  ];

  for (const c of cases) {
    it(`records ${c.name}`, async () => {
      const r = await raw(app.pep.port, [c.request], {
        until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}"),
      });
      expect(r.status, r.text).toBe(c.status);
      const id = decisionIdOf(r.text);
      const row = await refusalRecord(id);
      expect(row.reason).toBe(c.reason);
      expect(row.source_ip).toBe("127.0.0.1");
      expect(row.data).toMatchObject({ pep: "pep-1", target: c.target });
      expect(app.upstream.seen).toHaveLength(0);
    });
  }

  it("records what Node's parser refuses: Content-Length with Transfer-Encoding, and garbage", async () => {
    for (const [request, reason] of [
      [
        `POST /x HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        "content-length-with-transfer-encoding",
      ],
      [
        `POST /x HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`,
        "content-length-with-transfer-encoding",
      ],
      [
        `POST /x HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n`,
        "content-length-duplicate",
      ],
      [`GET /x HTTP/1.1\r\nHost: ${HOST}\r\nBad Header: x\r\n\r\n`, "header-invalid"],
      ["\u0000\u0001garbage\r\n\r\n", "method-invalid"],
    ] as const) {
      const r = await raw(app.pep.port, [request]);
      expect(r.status, r.text).toBe(400);
      const row = await refusalRecord(decisionIdOf(r.text));
      expect(row.reason, request).toBe(reason);
      // Unparsed: only the TCP peer is known, and loopback is a trusted proxy by default —
      // so it is kept as `peer`, and no source address is given for the alert rules to ban.
      expect(row.source_ip).toBeNull();
      expect(row.data["peer"]).toBe("127.0.0.1");
    }
    expect(app.upstream.seen).toHaveLength(0);
  });

  it("records forward-auth requests it cannot read, and forward-auth for no route (still 403 for nginx)", async () => {
    const conflict = await raw(
      app.pep.port,
      [
        `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nX-Original-URL: http://${HOST}/admin\r\nX-Original-Method: GET\r\nX-Forwarded-Uri: /public\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    expect(conflict.status).toBe(400);
    const row = await refusalRecord(decisionIdOf(conflict.text));
    expect(row).toMatchObject({ reason: "forwarded-conflict", source_ip: "127.0.0.1" });
    expect(row.data).toMatchObject({ pep: "pep-1/forward-auth" });

    const noRoute = await raw(
      app.pep.port,
      [
        `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nX-Original-URL: http://nowhere.localhost/x?y=1\r\nX-Original-Method: GET\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    expect(noRoute.status).toBe(403);
    const nr = await refusalRecord(decisionIdOf(noRoute.text));
    // Behind a trusted proxy the client is the X-Forwarded-For address.
    expect(nr).toMatchObject({ reason: "no-route", source_ip: "198.51.100.4" });
    expect(nr.data).toMatchObject({
      host: "nowhere.localhost",
      target: "/x",
      query_length: 3,
      method: "GET",
    });
    // nginx's error_page 403 → /.zt/denied?decision=… shows this refusal, not "unknown".
    const page = await raw(
      app.pep.port,
      [
        `GET /.zt/denied?decision=${nr.decision_id} HTTP/1.1\r\nHost: ${HOST}\r\nAccept: application/json\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    expect(page.status).toBe(403);
    expect(page.text).toContain('"reason":"no-route"');
  });

  it("records a forward-auth check whose request carries two Authorization headers (403, the hint on /.zt/denied)", async () => {
    // As Traefik forwards them (X-Forwarded-*, every value of authRequestHeaders).
    const r = await raw(
      app.pep.port,
      [
        `GET /.zt/authz HTTP/1.1\r\nHost: zt.internal\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${HOST}\r\nX-Forwarded-Uri: /x\r\nAuthorization: Basic eDp5\r\nAuthorization: Bearer zt-token\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    expect(r.status).toBe(403);
    const row = await refusalRecord(decisionIdOf(r.text));
    expect(row).toMatchObject({ reason: "authorization-duplicate", source_ip: "127.0.0.1" });
    expect(row.data).toMatchObject({ pep: "pep-1/forward-auth", host: HOST, target: "/x" });
    const page = await raw(
      app.pep.port,
      [
        `GET /.zt/denied?decision=${row.decision_id} HTTP/1.1\r\nHost: ${HOST}\r\nAccept: application/json\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    expect(page.status).toBe(403);
    expect(page.text).toContain('"reason":"authorization-duplicate"');
    expect(page.text).toContain("more than one Authorization header");
  });

  it("keeps the path of a refused target, never its query or ;parameters (tokens, session ids)", async () => {
    const noRoute = await raw(
      app.pep.port,
      [`GET /cb?code=SECRET-CODE&access_token=tok123 HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n`],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    const a = await refusalRecord(decisionIdOf(noRoute.text));
    expect(a.data).toMatchObject({ target: "/cb", query_length: 36 });
    const params = await raw(
      app.pep.port,
      [`GET /app;jsessionid=SESSION-SECRET/x HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    const b = await refusalRecord(decisionIdOf(params.text));
    expect(b.data["target"]).toBe("/app;…/x");
    expect(JSON.stringify([a, b])).not.toMatch(/SECRET|tok123/);
  });

  it("keeps no credentials of an absolute-form target's userinfo (http://user:password@host/…)", async () => {
    const r = await raw(
      app.pep.port,
      [
        `GET http://admin:HUNTER2-SECRET@nowhere.localhost/x?k=v HTTP/1.1\r\nHost: nowhere.localhost\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}") },
    );
    const row = await refusalRecord(decisionIdOf(r.text));
    expect(row.data["target"]).toBe("http://[redacted]@nowhere.localhost/x");
    expect(JSON.stringify(row)).not.toMatch(/HUNTER2|admin/);
  });

  it("keeps only the first 512 characters of a long refused target", async () => {
    const long = `/a/..%2f${"x".repeat(4000)}`;
    const r = await raw(app.pep.port, [`GET ${long} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], {
      until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}"),
    });
    const row = await refusalRecord(decisionIdOf(r.text));
    expect(row.data["target"]).toBe(`${long.slice(0, 512)}…`);
  });

  it("exports to SIEMs as OCSF Network Activity, Refuse / Blocked", async () => {
    const r = await raw(app.pep.port, [`DELETE /a;b HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], {
      until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}"),
    });
    const row = await refusalRecord(decisionIdOf(r.text));
    expect(toOcsf({ ...row, data: JSON.stringify(row.data) })).toMatchObject({
      class_uid: 4001,
      activity_id: 5,
      action: "Denied",
      disposition: "Blocked",
      http_request: { http_method: "DELETE" },
      src_endpoint: { ip: "127.0.0.1" },
      unmapped: { zt_kind: "request.refused", reason: "path-ambiguous" },
    });
  });

  it("counts refusals by reason in zt_pep_refused_total", async () => {
    const { body: text } = await renderMetrics();
    expect(text).toMatch(/zt_pep_refused_total\{reason="host-duplicate"\} [1-9]/);
    expect(text).toMatch(/zt_pep_refused_total\{reason="no-route"\} [1-9]/);
  });

  it("is explained by the real `zt audit explain`", async () => {
    const r = await raw(app.pep.port, [`GET /p/..%2fq HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], {
      until: (t) => t.includes("\r\n\r\n{") && t.endsWith("}"),
    });
    const id = decisionIdOf(r.text);
    await app.pep.ctx.audit.flush();
    const out = await runZt(["--config", join(app.pep.dir, "zt.yaml"), "audit", "explain", id]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(id);
    expect(out.stdout).toContain("reason: path-ambiguous");
    expect(out.stdout).toContain("/p/..%2fq");
    expect(out.stdout).toContain("encoded slash");
  });
});

describe("alert rules: a jail on refused requests (match: refused)", () => {
  it("bans a source probing with malformed requests, and counts nothing else", () => {
    let ts = 1_000_000;
    let seq = 0;
    const ev = (kind: string, outcome: string, reason: string): AlertEvent => ({
      seq: ++seq,
      ts: (ts += 1000),
      kind,
      outcome,
      subject: null,
      source_ip: "203.0.113.50",
      route: null,
      reason,
      data: {},
    });
    const engine = new AlertEngine(
      parseAlertsConfig({
        jails: [
          {
            name: "probe-ip",
            match: "refused",
            by: "ip",
            maxretry: 3,
            findtime: "1m",
            bantime: "10m",
          },
        ],
        denial_burst: null,
        fan_out: null,
        mtls_failures: null,
        new_network: null,
        break_glass: false,
      }),
    );
    // Denials and failed logins are other jails' business.
    for (let i = 0; i < 5; i++) {
      expect(engine.evaluate(ev("decision", "deny", "no-policy")).bans).toEqual([]);
      expect(engine.evaluate(ev("login", "failure", "bad-password")).bans).toEqual([]);
    }
    // A WebSocket refused for its Origin: a foreign page made the victim's browser send it
    // (the victim's cookie, the victim's address). Banning the source would punish them.
    for (let i = 0; i < 5; i++)
      expect(engine.evaluate(ev("request.refused", "deny", "websocket-origin")).bans).toEqual([]);
    expect(engine.evaluate(ev("request.refused", "deny", "encoded-dot-segment")).bans).toEqual([]);
    expect(engine.evaluate(ev("request.refused", "deny", "host-duplicate")).bans).toEqual([]);
    const third = engine.evaluate(ev("request.refused", "deny", "no-route"));
    expect(third.bans).toHaveLength(1);
    expect(third.bans[0]).toMatchObject({ key: "ip:203.0.113.50" });
  });
});

describe("refusals of slow clients", () => {
  it("records a client that started a request and stalled, not a connection that sent nothing", async () => {
    const app = await startPepAppRoute({
      host: HOST,
      policies: POLICY,
      limits: { header_timeout: "1s", request_timeout: "2s" },
    });
    const zt = app.pep;
    try {
      // A browser's speculative preconnect: opened, nothing sent, closed by the server.
      const silent = await raw(zt.port, []);
      expect(silent.closed).toBe(true);
      // Slowloris: half a header block, then nothing.
      const stalled = await raw(zt.port, [`GET /x HTTP/1.1\r\nHost: ${HOST}\r\nX-A: 1\r\n`]);
      expect(stalled.status, stalled.text).toBe(408);
      const id = decisionIdOf(stalled.text);
      await zt.ctx.audit.flush();
      const refused = await zt.ctx.store.db
        .selectFrom("audit_events")
        .select(["decision_id", "reason"])
        .where("kind", "=", "request.refused")
        .execute();
      expect(refused).toEqual([{ decision_id: id, reason: "request-timeout" }]);
    } finally {
      await app.close();
    }
  }, 30_000);
});

describe("what a refusal record is not", () => {
  it("is not written for a banned source, nor for a request already decided (slow upload); an unproxied peer is the source", async () => {
    const app = await startPepAppRoute({
      host: HOST,
      policies: POLICY,
      limits: { header_timeout: "1s", request_timeout: "2s" },
      trusted_proxies: [],
    });
    const zt = app.pep;
    const refused = async () => {
      await zt.ctx.audit.flush();
      return zt.ctx.store.db
        .selectFrom("audit_events")
        .select(["reason", "source_ip"])
        .where("kind", "=", "request.refused")
        .execute();
    };
    try {
      // No proxy in front: the peer is the client, and is recorded as the source.
      const first = await raw(zt.port, [
        `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nBad Header: x\r\n\r\n`,
      ]);
      expect(first.status).toBe(400);
      expect(await refused()).toEqual([{ reason: "header-invalid", source_ip: "127.0.0.1" }]);
      // A slow upload on an allowed request is cut by request_timeout: decided, not refused.
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const slow = await raw(zt.port, [
        `POST /upload HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${cookie}\r\nContent-Length: 100\r\n\r\nab`,
      ]);
      expect(slow.closed).toBe(true);
      expect(await refused()).toHaveLength(1);
      // A banned source: answered, not recorded (malformed requests cannot flood the log).
      setBansForTest({ "127.0.0.1": Number.MAX_SAFE_INTEGER });
      const banned = await raw(zt.port, [
        `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nBad Header: x\r\n\r\n`,
      ]);
      expect(banned.status).toBe(400);
      expect(await refused()).toHaveLength(1);
    } finally {
      setBansForTest({});
      await app.close();
    }
  }, 30_000);
});

describe("zt audit tail / explain on hostile text", () => {
  it("shows control characters from a recorded request as escapes, never writes them to the terminal", async () => {
    const { formatTailLine } = await import("../src/cli/commands/audit.js");
    const { printable } = await import("../src/core/printable.js");
    // CSI (U+009B) and OSC (U+009D) as a latin-1 header byte arrives; ESC; BEL.
    const hostile = "/x\u009b2J\u009d0;PWN\u0007\u001b[31m";
    expect(printable(hostile)).toBe("/x\\u{9b}2J\\u{9d}0;PWN\\u{7}\\u{1b}[31m");
    const line = formatTailLine({
      seq: 1,
      id: "evt_1",
      ts: 0,
      kind: "request.refused",
      outcome: "deny",
      subject: null,
      source_ip: null,
      route: null,
      action: null,
      decision_id: "dec_x",
      policies: null,
      reason: hostile,
      data: "{}",
      prev_hash: "0".repeat(64),
      hash: "0".repeat(64),
    });
    // eslint-disable-next-line no-control-regex -- asserting their absence
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });
});
