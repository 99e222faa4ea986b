import { expect } from "vitest";
import WebSocket from "ws";

export interface OpenWebSocket {
  ws: WebSocket;
  /** Resolves when the socket closes (whoever closed it). */
  closed: Promise<void>;
  isOpen(): boolean;
}

/**
 * Opens a real WebSocket to `ws://127.0.0.1:<port>/ws` with the given Host and session
 * cookie (through the PEP); rejects on an error or a refused upgrade (naming its status).
 */
export async function openWebSocket(
  port: number,
  host: string,
  cookie: string,
  options: { localAddress?: string } = {},
): Promise<OpenWebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
    headers: { host, cookie },
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) =>
      reject(new Error(`upgrade refused: ${res.statusCode}`)),
    );
  });
  let open = true;
  const closed = new Promise<void>((resolve) =>
    ws.once("close", () => {
      open = false;
      resolve();
    }),
  );
  return { ws, closed, isOpen: () => open };
}

/** Sends `text` and resolves with the next message the socket receives (the echo). */
export function roundTrip(ws: WebSocket, text: string): Promise<string> {
  const reply = new Promise<string>((resolve) =>
    ws.once("message", (m: WebSocket.RawData) => resolve(m.toString())),
  );
  ws.send(text);
  return reply;
}

/**
 * `openWebSocket`, then a "ping" round trip proving the tunnel live (the upstream
 * echoes).
 */
export async function openEchoingWebSocket(
  port: number,
  host: string,
  cookie: string,
  options: { localAddress?: string } = {},
): Promise<OpenWebSocket> {
  const c = await openWebSocket(port, host, cookie, options);
  expect(await roundTrip(c.ws, "ping")).toBe("ping");
  return c;
}

/** Sends `text` from `from`, resolving once `to` has it; rejects if `to` closes first. */
export function relay(from: WebSocket, to: WebSocket, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: WebSocket.RawData) => {
      if (m.toString() !== text) return;
      done();
      resolve();
    };
    const onClose = () => {
      done();
      reject(new Error(`closed before ${JSON.stringify(text)} was relayed`));
    };
    const done = () => {
      to.off("message", onMessage);
      to.off("close", onClose);
    };
    to.on("message", onMessage);
    to.once("close", onClose);
    from.send(text);
  });
}
