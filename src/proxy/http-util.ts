import type { IncomingMessage, ServerResponse } from "node:http";
import { ZtError, type ZtErrorCode } from "../core/errors.js";

/** Reads the named cookie; garbage yields undefined, never an exception. */
export function readCookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Removes one cookie from a Cookie header (the session token never reaches upstreams). */
export function stripCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  const kept = header
    .split(";")
    .map((p) => p.trim())
    .filter(
      (p) =>
        p !== "" && p.slice(0, p.indexOf("=") === -1 ? p.length : p.indexOf("=")).trim() !== name,
    );
  return kept.length ? kept.join("; ") : undefined;
}

/** True when the client prefers an HTML page (a browser) over JSON. */
export function wantsHtml(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? "";
  return accept.includes("text/html");
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}

export function sendHtml(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(html),
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy":
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "referrer-policy": "same-origin",
    ...headers,
  });
  res.end(html);
}

export function sendError(
  res: ServerResponse,
  code: ZtErrorCode,
  message: string,
  extra: Record<string, unknown> = {},
): void {
  const e = new ZtError(code, message, extra);
  sendJson(res, e.httpStatus, e.toJSON());
}

/** Reads a request body up to `limit` bytes; rejects with ZT_PAYLOAD_TOO_LARGE beyond. */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new ZtError("ZT_PAYLOAD_TOO_LARGE", `request body exceeds ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** A same-host return path: must be a path, never another origin (no open redirects). */
export function safeReturnTo(value: unknown): string {
  if (
    typeof value !== "string" ||
    !value.startsWith("/") ||
    value.startsWith("//") ||
    value.includes("\\")
  )
    return "/";
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\x00-\x1f]/.test(value)) return "/";
  return value.slice(0, 2048);
}
