import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { AppContext } from "../../app/index.js";
import { parseDuration } from "../../core/duration.js";
import { isZtError, ZtError } from "../../core/errors.js";
import { DEFAULT_USER_EXTENSIONS, pkiService } from "../../pki/index.js";
import { clientIp, type ApiCaller } from "../api-auth.js";
import type { ApiRouteDeps } from "./index.js";

const signBody = z
  .object({
    /** The user's public key line (`ssh-ed25519 AAAA… comment`). */
    public_key: z.string().max(64 * 1024),
    /** Login names the certificate is valid for (at least one). */
    principals: z.array(z.string().max(256)).max(64),
    host_group: z.string().max(128).default("default"),
    /** `8h`, `30m`, or seconds; default pki.ssh.user_ttl, at most pki.ssh.max_ttl. */
    ttl: z.union([z.string().max(32), z.number()]).optional(),
    source_addresses: z.array(z.string().max(64)).max(64).optional(),
    force_command: z.string().max(4096).optional(),
    /** Standard extensions to leave out, e.g. `["permit-pty"]`. */
    without_extensions: z.array(z.enum(DEFAULT_USER_EXTENSIONS)).max(5).optional(),
  })
  .strict();

/**
 * `POST /api/v1/ssh/sign`: public key + principals (+ host group, ttl, options) in, an
 * OpenSSH user certificate line out. The caller is a zt session (cookie or Bearer) or an
 * mTLS SVID; signing is the Cedar decision `ssh:sign` on `HostGroup::"<host_group>"`
 * for `User::"<session user>"` or `Service::"<spiffe id>"`. Denied → 403 with the
 * decision id and reason; no credentials → 401; bad input → 400. All audited (`ssh.sign`).
 */
export function registerSshRoutes(app: FastifyInstance, ctx: AppContext, deps: ApiRouteDeps): void {
  app.post("/api/v1/ssh/sign", async (req, reply) => {
    /** Audits a request refused before signing (signUser audits its own outcomes). */
    const refused = (
      outcome: "deny" | "failure",
      reason: string,
      data: Record<string, unknown>,
      subject?: string,
    ) =>
      ctx.audit.record({
        kind: "ssh.sign",
        outcome,
        ...(subject !== undefined ? { subject } : {}),
        sourceIp: clientIp(req),
        action: "ssh:sign",
        reason,
        data: { ...data, via: "api" },
      });
    let caller: ApiCaller;
    try {
      caller = await deps.auth.caller(req);
    } catch (e) {
      refused("deny", reasonOf(e), { code: isZtError(e) ? e.code : "ZT_INTERNAL" });
      throw e;
    }
    const subject = caller.kind === "user" ? caller.name : caller.spiffeId;
    const r = signBody.safeParse(req.body);
    if (!r.success) {
      const i = r.error.issues[0]!;
      const err = new ZtError("ZT_BAD_REQUEST", `${i.path.join(".") || "body"}: ${i.message}`, {
        reason: "bad-request",
      });
      refused(
        "failure",
        "bad-request",
        { code: err.code, field: i.path.join(".") || "body" },
        subject,
      );
      throw err;
    }
    const b = r.data;
    const svc = await pkiService(ctx);
    let ttlMs: number | undefined;
    try {
      ttlMs = b.ttl === undefined ? undefined : parseDuration(b.ttl, "ttl");
    } catch (e) {
      refused("failure", "ttl-invalid", { code: "ZT_PKI_TTL_INVALID" }, subject);
      throw new ZtError("ZT_PKI_TTL_INVALID", (e as Error).message, {
        reason: "ttl-invalid",
        field: "ttl",
      });
    }
    // signUser validates the key and options, asks the policy engine and audits either way.
    const signed = await svc.ssh
      .signUser({
        publicKey: b.public_key,
        user: caller.kind === "user" ? caller.name : "",
        ...(caller.kind === "service" ? { service: caller.spiffeId } : {}),
        ...(caller.kind === "user" ? { mfaAgeSeconds: caller.mfaAgeSeconds } : {}),
        hostGroup: b.host_group,
        principals: b.principals,
        ttlMs,
        sourceAddresses: b.source_addresses,
        forceCommand: b.force_command,
        withoutExtensions: b.without_extensions,
        actor: subject,
        sourceIp: clientIp(req),
      })
      .catch((e: unknown) => {
        throw namingField(e);
      });
    void reply.status(201);
    return {
      certificate: signed.certLine,
      serial: signed.serial,
      key_id: signed.keyId,
      principals: signed.principals,
      valid_after: signed.validAfterMs,
      valid_before: signed.validBeforeMs,
      decision_id: signed.decisionId,
    };
  });
}

/** The JSON field each refusal of signUser's validators (by its reason) is about. */
const FIELD_OF_REASON: ReadonlyMap<string, string> = new Map([
  ["principals-empty", "principals"],
  ["principals-too-many", "principals"],
  ["principal-invalid", "principals"],
  ["source-address-invalid", "source_addresses"],
  ["force-command-invalid", "force_command"],
  ["host-group-invalid", "host_group"],
  ["ttl-invalid", "ttl"],
]);

/**
 * A refusal of the request's content by signUser, which the CLI shares, in the API's
 * words: the JSON field it is about as `field` and at the head of the message, where the
 * CLI's flag (`--principal`, `--source-address`, `--force-command`) is no help.
 */
function namingField(e: unknown): unknown {
  if (!isZtError(e)) return e;
  const reason = e.context["reason"];
  const field =
    e.code === "ZT_PKI_KEY_INVALID"
      ? "public_key"
      : typeof reason === "string"
        ? FIELD_OF_REASON.get(reason)
        : undefined;
  if (field === undefined) return e;
  const message = e.message.replace(/ ?--[a-z][a-z-]*/g, "").trim();
  return new ZtError(e.code, `${field}: ${message}`, { ...e.context, field }, { cause: e });
}

function reasonOf(e: unknown): string {
  if (isZtError(e) && typeof e.context["reason"] === "string") return e.context["reason"];
  return isZtError(e) ? e.code : "internal";
}
