/**
 * `audit.durable_before_forward`: an allowed request reaches the upstream only once its
 * decision record is committed, so a crash right after forwarding cannot lose it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import Database from "better-sqlite3";
import { raw, startPep, type PepFixture } from "./pep-fixture.js";

const HOST = "app.localhost";

describe("PEP with audit.durable_before_forward: unsafe-methods", () => {
  let zt: PepFixture;
  let upstream: http.Server;
  let reader: Database.Database;
  /** What the upstream found in the audit table when each request reached it. */
  const atUpstream: { method: string; recorded: boolean }[] = [];

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
      // Another connection, as `zt audit verify` after a crash would read the file.
      const id = req.headers["x-zt-decision-id"];
      const row = reader
        .prepare("SELECT outcome FROM audit_events WHERE decision_id = ? AND kind = 'decision'")
        .get(id) as { outcome: string } | undefined;
      atUpstream.push({ method: req.method ?? "", recorded: row?.outcome === "allow" });
      res.end("ok");
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    zt = await startPep({
      policies: `permit (principal in Group::"eng", action, resource);`,
      routes: [
        {
          name: "app",
          from: `http://${HOST}`,
          to: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
        },
      ],
      extra: { audit: { durable_before_forward: "unsafe-methods" } },
    });
    await zt.addUser("alice", ["eng"]);
    reader = new Database(join(zt.dir, "data", "zt.db"), { readonly: true });
  }, 60_000);

  afterAll(async () => {
    reader?.close();
    await zt?.close();
    await new Promise((r) => upstream?.close(r));
  });

  it("stops an allowed POST reaching the upstream before its decision record is durable", async () => {
    const { cookie } = await zt.session("alice");
    await zt.ctx.audit.flush();
    const sends = [];
    for (let i = 0; i < 20; i++) {
      sends.push(
        raw(zt.port, [
          `POST /transfer/${i} HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
        ]),
      );
    }
    const answers = await Promise.all(sends);
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(atUpstream).toHaveLength(20);
    expect(atUpstream.every((u) => u.method === "POST" && u.recorded)).toBe(true);
  });

  it("stops forward-auth answering 200 for a POST before its decision record is durable", async () => {
    const { cookie } = await zt.session("alice");
    await zt.ctx.audit.flush();
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        raw(zt.port, [
          `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${cookie}\r\n` +
            `X-Original-URL: http://${HOST}/pay/${i}\r\nX-Original-Method: POST\r\nConnection: close\r\n\r\n`,
        ]),
      ),
    );
    for (const a of answers) {
      expect(a.status).toBe(200);
      const id = /x-zt-decision-id: (\S+)/i.exec(a.text)?.[1];
      const row = reader
        .prepare("SELECT outcome FROM audit_events WHERE decision_id = ? AND kind = 'decision'")
        .get(id) as { outcome: string } | undefined;
      expect(row?.outcome).toBe("allow");
    }
  });
});
