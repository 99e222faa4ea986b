import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { AppContext } from "../../app/index.js";
import { ZtError } from "../../core/errors.js";
import { DeviceService } from "../../device/index.js";

const reportBody = z
  .object({ payload: z.string().max(64 * 1024), signature: z.string().max(200) })
  .strict();
const bindBody = z
  .object({
    session_id: z.string().regex(/^ses_[A-Za-z0-9_-]+$/),
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
 * Device endpoints agents call. Each body is signed with the device's registered
 * Ed25519 key, which is what authenticates the caller (no session needed).
 *   POST /v1/devices/:id/reports  { payload, signature }
 *   POST /v1/devices/:id/bind     { session_id, at, signature }
 */
export function registerDeviceRoutes(app: FastifyInstance, ctx: AppContext): void {
  let svc: DeviceService | undefined;
  const service = () => (svc ??= new DeviceService(ctx));
  app.post<{ Params: { id: string } }>("/v1/devices/:id/reports", async (req) => {
    const b = parse(reportBody, req.body);
    const r = await service().submitReport(req.params.id, b.payload, b.signature);
    return { device_id: r.device.id, score: r.score, compliant: r.compliant, failures: r.failures };
  });
  app.post<{ Params: { id: string } }>("/v1/devices/:id/bind", async (req) => {
    const b = parse(bindBody, req.body);
    await service().bindSession(b.session_id, req.params.id, b.at, b.signature);
    return { bound: true, session_id: b.session_id, device_id: req.params.id };
  });
}
