import http from "node:http";
import type { AddressInfo } from "node:net";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { escapeHtml, page } from "../web/index.js";

export interface WhoamiApp {
  port: number;
  close(): Promise<void>;
}

/**
 * The demo upstream: it verifies the X-Zt-Assertion against zt's JWKS (as any real
 * upstream should) and shows the identity it received. WebSocket upgrades echo back.
 */
export async function startWhoamiApp(options: {
  host: string;
  port: number;
  jwksUrl: () => string;
}): Promise<WhoamiApp> {
  let jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  const server = http.createServer(async (req, res) => {
    const assertion = req.headers["x-zt-assertion"];
    let verified: Record<string, unknown> | undefined;
    let problem: string | undefined;
    if (typeof assertion === "string") {
      try {
        jwks ??= createRemoteJWKSet(new URL(options.jwksUrl()));
        const { payload } = await jwtVerify(assertion, jwks, { algorithms: ["ES256"] });
        verified = payload as Record<string, unknown>;
      } catch (e) {
        problem = `assertion did not verify: ${(e as Error).message}`;
      }
    } else problem = "no X-Zt-Assertion header: this request did not come through zt";
    const body = {
      verified: verified !== undefined,
      identity: verified ?? null,
      problem: problem ?? null,
      method: req.method,
      path: req.url,
      forwarded_for: req.headers["x-forwarded-for"] ?? null,
      decision_id: req.headers["x-zt-decision-id"] ?? null,
    };
    if ((req.headers.accept ?? "").includes("text/html")) {
      const rows = verified
        ? `<dl><dt>User</dt><dd>${escapeHtml(String(verified["sub"]))}</dd><dt>Groups</dt><dd>${escapeHtml(
            ((verified["groups"] as string[]) ?? []).join(", "),
          )}</dd><dt>App</dt><dd>${escapeHtml(String(verified["aud"]))}</dd><dt>Decision</dt><dd><code>${escapeHtml(
            String(verified["decision_id"]),
          )}</code></dd><dt>Path</dt><dd><code>${escapeHtml(req.url ?? "")}</code></dd></dl>`
        : `<p class="sub">${escapeHtml(problem ?? "")}</p>`;
      const html = page(
        "whoami · zt demo",
        `<h1>Hello${verified ? ", " + escapeHtml(String(verified["sub"])) : ""}</h1><p class="sub">This is the demo app behind zt. It verified the signed identity assertion zt sent.</p>${rows}<form method="post" action="/.zt/logout"><button type="submit">Sign out</button></form>`,
      );
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(html);
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  });
  server.on("upgrade", (req, socket) => {
    const key = req.headers["sec-websocket-key"];
    if (typeof key !== "string") return socket.destroy();
    // Minimal RFC 6455 handshake; frames are echoed back unchanged (masked client frames
    // are not valid server frames, so we unmask text frames before echoing).
    void import("node:crypto").then(({ createHash }) => {
      const accept = createHash("sha1")
        .update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        .digest("base64");
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      socket.on("data", (buf: Buffer) => {
        if (buf.length < 6) return;
        const opcode = buf[0]! & 0x0f;
        if (opcode === 0x8) return socket.end();
        let len = buf[1]! & 0x7f;
        let off = 2;
        if (len === 126) {
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) return socket.destroy();
        const mask = buf.subarray(off, off + 4);
        const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
        for (let i = 0; i < data.length; i++) data[i]! ^= mask[i % 4]!;
        const header =
          len < 126
            ? Buffer.from([0x80 | opcode, len])
            : Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]);
        socket.write(Buffer.concat([header, data]));
      });
      socket.on("error", () => socket.destroy());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
