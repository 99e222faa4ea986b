import http from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/** A real upstream HTTP server that records what reached it. */
export async function startRecordingUpstream(): Promise<{
  port: number;
  seen: SeenRequest[];
  close(): Promise<void>;
}> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok: true, url: req.url }));
  });
  // WebSocket echo, so upgrades through the PEP can be tested end to end.
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    seen.push({ method: "UPGRADE", url: req.url ?? "", headers: req.headers });
    wss.handleUpgrade(req, socket, head, (ws) => ws.on("message", (m) => ws.send(m)));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/**
 * A real upstream for long-lived connections: `/stream` answers a response that never
 * ends (server-sent events), anything else "ok"; WebSocket upgrades are accepted and
 * handed, in order, to whoever called `nextSocket()` first.
 */
export async function startStreamingUpstream(): Promise<{
  url: string;
  nextSocket(): Promise<import("ws").WebSocket>;
  close(): Promise<void>;
}> {
  const server = http.createServer((req, res) => {
    if (req.url !== "/stream") return res.end("ok");
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write("data: hello\n\n");
  });
  const sockets: import("ws").WebSocket[] = [];
  const waiters: ((ws: import("ws").WebSocket) => void)[] = [];
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws);
      waiters.shift()?.(ws);
    }),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    nextSocket: () => new Promise((resolve) => waiters.push(resolve)),
    close: () =>
      new Promise<void>((r) => {
        for (const ws of sockets) ws.terminate();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
