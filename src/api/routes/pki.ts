import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { AppContext } from "../../app/index.js";
import { isZtError, ZtError } from "../../core/errors.js";
import { parseDuration } from "../../core/duration.js";
import { pkiService, type IssueAuth } from "../../pki/index.js";
import { clientIp } from "../api-auth.js";
import type { ApiRouteDeps } from "./index.js";

const svidBody = z
  .object({
    csr: z.string().max(32 * 1024),
    spiffe_id: z.string().max(2048).optional(),
    dns: z.array(z.string().max(253)).max(64).optional(),
    ttl: z.union([z.string().max(32), z.number()]).optional(),
    /** Join token (or send it as `Authorization: Bearer …`). */
    token: z.string().max(256).optional(),
    /** Renewal without mTLS: the current SVID and, for a new key, a proof signed by the old key. */
    renew: z
      .object({ cert: z.string().max(32 * 1024), proof: z.string().max(2048).optional() })
      .strict()
      .optional(),
  })
  .strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new ZtError("ZT_BAD_REQUEST", `${i.path.join(".") || "body"}: ${i.message}`);
  }
  return r.data;
}

/**
 * PKI endpoints: `POST /api/v1/svid` (CSR in, chain out; a join token for first contact
 * or the current SVID for renewal), `GET /pki/crl` (DER), `GET /pki/bundle`, and the
 * SSH CA's public lines and KRL.
 *
 * Renewal authenticates with the current SVID: as the mTLS client certificate (HTTPS
 * listener), or in the body with a proof signed by its key. A presented client
 * certificate that is refused (revoked, expired, foreign) fails the request (401).
 */
export function registerPkiRoutes(app: FastifyInstance, ctx: AppContext, deps: ApiRouteDeps): void {
  app.post("/api/v1/svid", async (req, reply) => {
    const body = parseBody(svidBody, req.body);
    const svc = await pkiService(ctx);
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const token = body.token ?? bearer;
    const mtls = deps.auth.service(req);
    let auth: IssueAuth;
    if (token) auth = { kind: "join-token", token };
    // The TLS handshake proved possession of the SVID's key.
    else if (mtls) auth = { kind: "svid", certDer: mtls.certDer, possessionProven: true };
    else if (body.renew) {
      const der = pemFirstCert(body.renew.cert);
      auth = body.renew.proof
        ? { kind: "svid", certDer: der, proof: Buffer.from(body.renew.proof, "base64") }
        : { kind: "svid", certDer: der };
    } else {
      throw new ZtError(
        "ZT_AUTH_REQUIRED",
        "send a join token (Authorization: Bearer …) or your current SVID",
      );
    }
    const issued = await svc
      .issueSvid({
        csr: body.csr,
        spiffeId: body.spiffe_id,
        dnsNames: body.dns,
        ttlMs: body.ttl === undefined ? undefined : ttlOf(body.ttl),
        auth,
        sourceIp: clientIp(req),
      })
      .catch((e: unknown) => {
        // The lifetime's range is checked by issueSvid: named as its form is (below).
        if (!isZtError(e) || e.code !== "ZT_PKI_TTL_INVALID") throw e;
        throw new ZtError("ZT_PKI_TTL_INVALID", `ttl: ${e.message}`, {
          ...e.context,
          field: "ttl",
        });
      });
    void reply.status(201);
    return {
      serial: issued.serial,
      spiffe_id: issued.spiffeId,
      dns: issued.dnsNames,
      not_before: issued.notBeforeMs,
      not_after: issued.notAfterMs,
      cert_chain: issued.chainPem,
      bundle: issued.bundlePem,
    };
  });

  app.get("/pki/crl", async (_req, reply) => {
    const der = await (await pkiService(ctx)).crlDer();
    void reply.header("content-type", "application/pkix-crl");
    return reply.send(der);
  });

  app.get<{ Params: { id: string } }>("/pki/crl/:id", async (req, reply) => {
    const der = await (await pkiService(ctx)).crlDer(req.params.id);
    void reply.header("content-type", "application/pkix-crl");
    return reply.send(der);
  });

  app.get<{ Querystring: { format?: string } }>("/pki/bundle", async (req, reply) => {
    const svc = await pkiService(ctx);
    if (req.query.format === "spiffe") return svc.spiffeBundle();
    if (req.query.format !== undefined && req.query.format !== "pem") {
      throw new ZtError("ZT_BAD_REQUEST", "format: expected pem or spiffe");
    }
    void reply.header("content-type", "application/x-pem-file");
    return svc.bundlePem();
  });

  app.get("/pki/ssh/user-ca.pub", async (_req, reply) => {
    void reply.header("content-type", "text/plain; charset=utf-8");
    return (await pkiService(ctx)).ssh.userCaLine() + "\n";
  });

  app.get("/pki/ssh/known-hosts", async (_req, reply) => {
    void reply.header("content-type", "text/plain; charset=utf-8");
    return (await pkiService(ctx)).ssh.knownHostsLine() + "\n";
  });

  app.get("/pki/ssh/krl", async (_req, reply) => {
    void reply.header("content-type", "application/octet-stream");
    return reply.send(await (await pkiService(ctx)).ssh.krl());
  });
}

/**
 * The requested lifetime. Not a duration is ZT_PKI_TTL_INVALID, as a lifetime out of range
 * is, and as `POST /api/v1/ssh/sign` answers both (it was ZT_BAD_REQUEST).
 */
function ttlOf(ttl: string | number): number {
  try {
    return parseDuration(ttl, "ttl");
  } catch (e) {
    throw new ZtError("ZT_PKI_TTL_INVALID", (e as Error).message, {
      reason: "ttl-invalid",
      field: "ttl",
    });
  }
}

function pemFirstCert(text: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(text);
  if (!m) throw new ZtError("ZT_BAD_REQUEST", "renew.cert: expected a PEM certificate");
  return Buffer.from(m[1]!.replace(/\s+/g, ""), "base64");
}
