/**
 * Forward-auth for HAProxy without Lua: zt as an SPOE agent (SPOA). HAProxy's SPOE filter
 * sends each request's method, target, Host, client address, session cookie (found and
 * counted by HAProxy's cookie parser over all Cookie headers) and Authorization header
 * (with the number of them) in one NOTIFY frame (message `zt-authz`); zt decides exactly as `/.zt/authz` does and answers
 * with an ACK that sets transaction variables (`txn.zt.status`, `txn.zt.assertion` …),
 * which the HAProxy configuration turns into the request headers or the refusal
 * (docs/forward-auth.md, "HAProxy (SPOE, no Lua)"). Only `trusted_proxies` may connect:
 * an agent believes the client address HAProxy names.
 */
import net, { type AddressInfo } from "node:net";
import { countShed, isBanned } from "../audit/index.js";
import { normalizeIp } from "../core/cidr.js";
import { ZtError } from "../core/errors.js";
import { canonicalizeRequest } from "./canonical-request.js";
import {
  refusalAnswer,
  type ForwardAuthAnswer,
  type ForwardAuthAsk,
  type ForwardAuthDeps,
} from "./forward-auth.js";
import { readOriginalRequest, type AddressSet } from "./forwarded-headers.js";
import {
  FRAME,
  SPOP_STATUS,
  SpopError,
  ackFrame,
  kvFrame,
  readKvList,
  readMessages,
  splitFrames,
  type SpopFrame,
  type SpopValue,
} from "./spop.js";

/** The SPOE message zt answers (`spoe-message zt-authz` in the SPOE configuration). */
export const SPOA_MESSAGE = "zt-authz";

/** Frames before the handshake: a HAPROXY-HELLO is far smaller (HAProxy's default max). */
const HELLO_FRAME_SIZE = 16_380;
/**
 * The largest frame taken once HAProxy has proposed its own (tune.bufsize - 4, 16380 by
 * default): up to 1 MiB, zt accepts HAProxy's. A NOTIFY carries a part of a request HAProxy
 * accepted into one buffer, so it fits in one frame; one that would not is never sent in
 * pieces (zt does not announce SPOP's "fragmentation"): HAProxy refuses the request.
 */
const MAX_FRAME_SIZE = 1_048_572;
/** An idle agent connection is closed after this (HAProxy reconnects when it needs one). */
const IDLE_MS = 5 * 60_000;

export interface SpoaOptions {
  decide(ask: ForwardAuthAsk): ForwardAuthAnswer | Promise<ForwardAuthAnswer>;
  deps: Pick<ForwardAuthDeps, "audit" | "clock" | "pepId">;
  /** Who may connect (`trusted_proxies`). */
  trusted: AddressSet;
  /** `session.cookie_name`: the cookie HAProxy sends as `session` (`req.cook`). */
  cookieName: string;
}

export interface SpoaServer {
  listen(host: string, port: number): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** Builds the SPOE agent; `listen` starts it. */
export function createSpoaServer(o: SpoaOptions): SpoaServer {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    const peer = normalizeIp(socket.remoteAddress ?? "");
    if (!o.trusted.has(peer)) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.setTimeout(IDLE_MS, () => socket.destroy());
    serveConnection(socket, o);
  });
  return {
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve(server.address() as AddressInfo));
      });
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function serveConnection(socket: net.Socket, o: SpoaOptions): void {
  let buffered: Buffer = Buffer.alloc(0);
  let maxFrame = HELLO_FRAME_SIZE;
  let helloDone = false;
  let closing = false;

  const disconnect = (status: number, message: string) => {
    if (closing) return;
    closing = true;
    socket.end(kvFrame(FRAME.AGENT_DISCONNECT, { "status-code": status, message }));
  };

  const onFrame = (f: SpopFrame) => {
    if (!helloDone) {
      if (f.type !== FRAME.HAPROXY_HELLO)
        throw new SpopError(SPOP_STATUS.INVALID, "expected HAPROXY-HELLO first");
      const kv = readKvList(f.payload);
      const versions = kv.get("supported-versions");
      if (typeof versions !== "string") throw new SpopError(SPOP_STATUS.NO_VERSION, "no version");
      if (!versions.split(",").some((v) => v.trim().startsWith("2.")))
        throw new SpopError(SPOP_STATUS.BAD_VERSION, `unsupported versions ${versions}`);
      const theirs = kv.get("max-frame-size");
      if (typeof theirs !== "number")
        throw new SpopError(SPOP_STATUS.NO_FRAME_SIZE, "no max-frame-size");
      if (theirs < 256) throw new SpopError(SPOP_STATUS.BAD_FRAME_SIZE, "max-frame-size < 256");
      maxFrame = Math.min(MAX_FRAME_SIZE, theirs);
      if (typeof kv.get("capabilities") !== "string")
        throw new SpopError(SPOP_STATUS.NO_CAPABILITIES, "no capabilities");
      const hello = kvFrame(FRAME.AGENT_HELLO, {
        version: "2.0",
        "max-frame-size": maxFrame,
        capabilities: "pipelining",
      });
      helloDone = true;
      // A health check ends after the handshake.
      if (kv.get("healthcheck") === true) {
        closing = true;
        socket.end(hello);
      } else socket.write(hello);
      return;
    }
    if (f.type === FRAME.HAPROXY_DISCONNECT) {
      disconnect(SPOP_STATUS.NORMAL, "bye");
      return;
    }
    if (f.type !== FRAME.NOTIFY) return; // unknown frames may be skipped (§3.2.2)
    const messages = readMessages(f.payload);
    const m = messages.find((x) => x.name === SPOA_MESSAGE);
    const answer = m ? askFor(m.args, o) : undefined;
    const reply = (a: ForwardAuthAnswer | undefined) => {
      if (closing || socket.destroyed) return;
      // No zt-authz message: an ACK without variables, which the documented
      // configuration answers 503 (fail closed).
      const frame = ackFrame(f.streamId, f.frameId, a ? variablesFor(a) : {});
      if (frame.length - 4 > maxFrame) {
        disconnect(SPOP_STATUS.TOO_BIG, "answer exceeds max-frame-size");
        return;
      }
      socket.write(frame);
    };
    if (answer instanceof Promise) answer.then(reply, () => reply(internalError()));
    else reply(answer);
  };

  socket.on("data", (chunk: Buffer) => {
    if (closing) return;
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    try {
      const { frames, rest } = splitFrames(buffered, maxFrame);
      buffered = rest.length === 0 ? Buffer.alloc(0) : Buffer.from(rest);
      for (const f of frames) {
        if (closing) break;
        onFrame(f);
      }
    } catch (e) {
      if (e instanceof SpopError) disconnect(e.status, e.message);
      else disconnect(SPOP_STATUS.UNKNOWN, "internal error");
    }
  });
}

function text(v: SpopValue | undefined): string | undefined {
  return typeof v === "string" ? v : Buffer.isBuffer(v) ? v.toString("utf8") : undefined;
}

/**
 * The NOTIFY's arguments as a forward-auth question, or the refusal when they are missing,
 * repeated or ambiguous. The path is decided only if HAProxy would forward it as it is
 * (it forwards the target as received), exactly as for X-Forwarded-Uri.
 */
function askFor(
  args: Map<string, SpopValue>,
  o: SpoaOptions,
): ForwardAuthAnswer | Promise<ForwardAuthAnswer> {
  const src = args.get("src");
  const clientIp =
    src !== null && typeof src === "object" && "ip" in src ? normalizeIp(src.ip) : "";
  const refuse = (reason: string, detail: string) =>
    refusalAnswer(o.deps, {
      code: "ZT_REQUEST_AMBIGUOUS",
      message: `forward-auth refused: ${detail}`,
      reason,
      sourceIp: clientIp,
      detail,
    });
  // As on the HTTP listener, before any other work: a banned source is refused, and
  // nothing is decided while the audit log cannot keep up (it could not be recorded).
  if (clientIp !== "" && isBanned(clientIp, o.deps.clock.now()))
    return plainRefusal(
      403,
      "ZT_BANNED",
      "this source address is temporarily banned",
      "source-banned",
    );
  if (o.deps.audit.backlogged) {
    countShed();
    return plainRefusal(
      503,
      "ZT_UNAVAILABLE",
      "the audit log is catching up: try again shortly",
      "audit-backlog",
    );
  }
  const method = text(args.get("method"));
  const url = text(args.get("url"));
  const host = text(args.get("host"));
  const hosts = args.get("hosts");
  if (clientIp === "" || method === undefined || url === undefined || host === undefined)
    return refuse("forwarded-missing", "the zt-authz message needs src, method, url and host");
  if (hosts !== 1) return refuse("host-duplicate", "the request has no Host header, or several");
  let uri = url;
  if (!url.startsWith("/")) {
    // Absolute form: its authority must be the Host header's (RFC 9112 §3.2.2).
    const canon = canonicalizeRequest(url, host);
    if (!canon.ok) return refuse(canon.reason, canon.detail);
    uri = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(url)?.[1] || "/";
  }
  const orig = readOriginalRequest(
    {
      "x-forwarded-method": [method],
      "x-forwarded-proto": [args.get("ssl") === true ? "https" : "http"],
      "x-forwarded-host": [host],
      "x-forwarded-uri": [uri],
    },
    "x-forwarded",
  );
  if (!orig.ok) return refuse(orig.reason, orig.detail);
  // The session cookie as HAProxy's own cookie parser finds it across every Cookie header
  // (`req.cook`, `req.cook_cnt`), not one header's text: what zt decides on is what the
  // generated rules then strip, however the client split its cookies. More than one is
  // refused (session-cookie-duplicate), whichever would be valid.
  const sessions = args.get("sessions");
  const session = args.get("session");
  if (typeof sessions !== "number" || session === undefined)
    return refuse(
      "forwarded-missing",
      "the zt-authz message needs session and sessions (req.cook and req.cook_cnt of the session cookie); regenerate zt-spoe.conf and haproxy.cfg with `zt forward-auth config`",
    );
  const cookie = text(session);
  if (sessions === 1 && cookie === undefined)
    return refuse("forwarded-missing", "the zt-authz message counts a session cookie but has none");
  // `req.fhdr` is the last Authorization header only: zt needs their number (`req.fhdr_cnt`,
  // whole lines, not comma-split values) to refuse a request carrying several.
  const authorizations = args.get("authorizations");
  if (typeof authorizations !== "number")
    return refuse(
      "forwarded-missing",
      "the zt-authz message needs authorizations (req.fhdr_cnt of Authorization); regenerate zt-spoe.conf with `zt forward-auth config haproxy-spoe`",
    );
  const authorization = text(args.get("authorization"));
  if (authorizations === 1 && authorization === undefined)
    return refuse(
      "forwarded-missing",
      "the zt-authz message counts an Authorization header but has none",
    );
  return o.decide({
    original: orig.request,
    headers: {
      ...(sessions > 0 && cookie !== undefined ? { cookie: `${o.cookieName}=${cookie}` } : {}),
      ...(authorizations > 0 && authorization ? { authorization } : {}),
    },
    sessionCookieCount: sessions,
    authorizationCount: authorizations,
    clientIp,
    mayRedirect: true,
    html: (text(args.get("accept")) ?? "").includes("text/html"),
  });
}

/** A refusal that is not recorded (as the HTTP listener's for bans and the audit backlog). */
function plainRefusal(
  status: number,
  code: "ZT_BANNED" | "ZT_UNAVAILABLE",
  message: string,
  reason: string,
): ForwardAuthAnswer {
  return {
    status,
    headers: { "x-zt-reason": reason },
    json: new ZtError(code, message, { reason }).toJSON(),
  };
}

function internalError(): ForwardAuthAnswer {
  return {
    status: 500,
    headers: {},
    json: { error: { code: "ZT_INTERNAL", message: "internal error" } },
  };
}

/**
 * The answer as transaction variables: `status` (int); on 200 `assertion`, `user`,
 * `groups`, `decision_id` (and `breakglass` when set); otherwise `decision_id`,
 * `reason`, `location`, `login_url`, `content_type` and `body`.
 */
export function variablesFor(a: ForwardAuthAnswer): Record<string, string | number> {
  const vars: Record<string, string | number> = { status: a.status };
  const h = a.headers;
  const copy = (header: string, name: string) => {
    const v = h[header];
    if (v !== undefined) vars[name] = String(v);
  };
  copy("x-zt-assertion", "assertion");
  copy("x-zt-user", "user");
  copy("x-zt-groups", "groups");
  copy("x-zt-decision-id", "decision_id");
  copy("x-zt-reason", "reason");
  copy("x-zt-breakglass", "breakglass");
  copy("location", "location");
  copy("x-zt-login-url", "login_url");
  if (a.html !== undefined) {
    vars["content_type"] = "text/html; charset=utf-8";
    vars["body"] = a.html;
  } else if (a.json !== undefined) {
    vars["content_type"] = "application/json; charset=utf-8";
    vars["body"] = JSON.stringify(a.json);
  }
  return vars;
}
