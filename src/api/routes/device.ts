import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import type { AppContext } from "../../app/index.js";
import { ZtError } from "../../core/errors.js";
import { DeviceService } from "../../device/index.js";
import { cookieFrom } from "../../proxy/index.js";
import { clientIp, refuseDuplicateSessionCookie } from "../api-auth.js";

const reportBody = z
  .object({ payload: z.string().max(64 * 1024), signature: z.string().max(200) })
  .strict();
const bindBody = z
  .object({
    /** Optional: the session meant; it must be the one whose token authenticates the request. */
    session_id: z
      .string()
      .regex(/^ses_[A-Za-z0-9_-]+$/)
      .optional(),
    at: z.number().int(),
    signature: z.string().max(200),
  })
  .strict();

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new ZtError("ZT_DEVICE_INVALID", `${i.path.join(".") || "body"}: ${i.message}`);
  }
  return r.data;
}

/**
 * The session token a bind request is authenticated by: the session cookie or
 * `Authorization: Bearer <token>`. Both present and different is refused, as are two
 * session cookies: which session is being bound must not be a guess.
 */
function sessionTokenOf(req: FastifyRequest, cookieName: string): string | undefined {
  refuseDuplicateSessionCookie(req, cookieName);
  const cookie = cookieFrom(req.headers.cookie, cookieName) || undefined;
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "")?.[1];
  if (cookie !== undefined && bearer !== undefined && cookie !== bearer)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      "two different session tokens (cookie and Authorization): send one",
    );
  return bearer ?? cookie;
}

/**
 * Device endpoints agents call. Each body is signed with the device's registered
 * Ed25519 key, which authenticates the device.
 *   POST /v1/devices/:id/reports  { payload, signature }          (no session needed)
 *   POST /v1/devices/:id/bind     { at, signature, session_id? }  authenticated by the
 *     session being bound (its cookie or `Authorization: Bearer <token>`); the signature
 *     covers the token's hash (`bindPayload`). A session id alone binds nothing.
 */
export function registerDeviceRoutes(app: FastifyInstance, ctx: AppContext): void {
  let svc: DeviceService | undefined;
  const service = () => (svc ??= new DeviceService(ctx));
  app.post<{ Params: { id: string } }>("/v1/devices/:id/reports", async (req) => {
    const b = parse(reportBody, req.body);
    const r = await service().submitReport(req.params.id, b.payload, b.signature, clientIp(req));
    return { device_id: r.device.id, score: r.score, compliant: r.compliant, failures: r.failures };
  });
  app.post<{ Params: { id: string } }>("/v1/devices/:id/bind", async (req) => {
    const b = parse(bindBody, req.body);
    const r = await service().bindSession({
      deviceId: req.params.id,
      sessionToken: sessionTokenOf(req, ctx.config.session.cookie_name),
      at: b.at,
      signature: b.signature,
      sessionId: b.session_id,
      sourceIp: clientIp(req),
    });
    return { bound: true, session_id: r.sessionId, device_id: req.params.id };
  });
}
