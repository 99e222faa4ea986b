import http from "node:http";
import https from "node:https";
import { expect } from "vitest";

export interface ClientResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json<T = Record<string, unknown>>(): T;
}

/** A plain HTTP request to 127.0.0.1:port with an explicit Host header (real socket). */
export function request(
  port: number,
  options: {
    host: string;
    path?: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    /** The loopback address to send from (127.0.0.2 … stand for other clients). */
    localAddress?: string;
    /**
     * Over TLS instead: trusting `ca`, checking the name `servername`, and presenting
     * `key` and `cert` (PEM) as the client certificate when given.
     */
    tls?: { ca: string; servername: string; key?: string; cert?: string };
  },
): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const req = (options.tls ? https : http).request(
      {
        host: "127.0.0.1",
        port,
        method: options.method ?? "GET",
        path: options.path ?? "/",
        headers: { host: options.host, ...options.headers },
        agent: false,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
        ...options.tls,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: <T>() => JSON.parse(body) as T,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/**
 * An API request to 127.0.0.1:`port` sent from the loopback address `from` (127.0.0.5,
 * 127.0.0.6 … stand for different clients); a `body`, when given, is sent as JSON.
 */
export function requestFrom(
  port: number,
  from: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<ClientResponse> {
  return request(port, {
    host: "127.0.0.1",
    method,
    path,
    localAddress: from,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** Logs in with JSON and returns the session cookie ("name=value"). */
export async function login(
  port: number,
  host: string,
  username: string,
  password: string,
  totp: string,
): Promise<{ status: number; cookie?: string; body: Record<string, unknown> }> {
  const r = await request(port, {
    host,
    path: "/.zt/login",
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password, totp }),
  });
  const set = r.headers["set-cookie"]?.[0];
  return { status: r.status, ...(set ? { cookie: set.split(";")[0]! } : {}), body: r.json() };
}

/**
 * A JSON POST to zt's sign-in endpoint from its own page's origin (`headers` added, or
 * overriding the origin); the whole answer.
 */
export function loginRequest(
  port: number,
  host: string,
  body: Record<string, unknown>,
  options: { headers?: Record<string, string>; localAddress?: string } = {},
): Promise<ClientResponse> {
  return request(port, {
    host: `${host}:${port}`,
    path: "/.zt/login",
    method: "POST",
    headers: {
      origin: `http://${host}:${port}`,
      "content-type": "application/json",
      ...options.headers,
    },
    body: JSON.stringify(body),
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
}

/** A JSON POST to zt's sign-in endpoint from its own page's origin; the HTTP status. */
export async function postLogin(
  port: number,
  host: string,
  body: Record<string, string>,
  localAddress?: string,
): Promise<number> {
  const r = await loginRequest(port, host, body, localAddress ? { localAddress } : {});
  return r.status;
}

/** Signs in with JSON (as `login`), expecting success; the session's cookie and id. */
export async function signIn(
  port: number,
  host: string,
  username: string,
  password: string,
  totp: string,
): Promise<{ cookie: string; sessionId: string }> {
  const l = await login(port, host, username, password, totp);
  expect(l.status, JSON.stringify(l.body)).toBe(200);
  return { cookie: l.cookie!, sessionId: String(l.body["session_id"]) };
}
