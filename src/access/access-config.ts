import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { formatDuration, parsePositiveConfigDuration } from "../core/duration.js";
import { NAME_RE } from "../identity/index.js";
import { outgoingHttpUrl } from "../audit/audit-config.js";
import {
  isAccessResource,
  parseAccessResource,
  resourceKey,
  RESOURCE_SYNTAX,
} from "./access-resource.js";

const duration = z.union([z.string(), z.number()]);
/** An App (`db-admin`, `App::"db-admin"`) or an SSH host group (`HostGroup::"prod"`). */
const resourceName = z.string().refine(isAccessResource, `expected ${RESOURCE_SYNTAX}`);
/**
 * A user or group name as zt's identity provider allows them (lowercase): any other
 * spelling (`OnCall`, `Leads`) matches no one, and would be found out only when an
 * approval or a break-glass is refused. (NAME_RE is read when a config is parsed, not at
 * module load: identity imports access.)
 */
const NAME_RULE = `a lowercase name of 1–64 letters, digits, ".", "_" or "-" starting with a letter or digit`;
const userName = z.string().refine((s) => NAME_RE.test(s), `expected a user name: ${NAME_RULE}`);
const groupName = z.string().refine((s) => NAME_RE.test(s), `expected a group name: ${NAME_RULE}`);

const accessSchema = z
  .object({
    /** Longest grant anyone may ask for, unless a resource says otherwise. */
    max_ttl: duration.default("8h"),
    /** How long a request may wait for its approvals; then it expires unapproved. */
    pending_ttl: duration.default("24h"),
    /** Groups whose members may revoke any grant or request (JIT and break-glass). */
    admins: z.array(groupName).default([]),
    /** Per App or host group: who approves, how many approvals, longest grant. */
    resources: z
      .record(
        resourceName,
        z
          .object({
            approvers: groupName,
            approvals: z.number().int().min(1).max(2).default(1),
            max_ttl: duration.optional(),
          })
          .strict(),
      )
      .default({}),
    breakglass: z
      .object({
        /** User names allowed to break glass. */
        accounts: z.array(userName).default([]),
        /** Apps and host groups break-glass opens. */
        resources: z.array(resourceName).default([]),
        /** Length of a break-glass grant (at most 1h); also the cooldown before another. */
        ttl: duration.default("1h"),
      })
      .strict()
      .default({ accounts: [], resources: [], ttl: "1h" }),
  })
  .strict();

const notificationsSchema = z
  .object({
    webhook: outgoingHttpUrl.optional(),
    /** How long to wait for the webhook. */
    timeout: duration.default("5s"),
  })
  .strict();

export interface ResourceAccessConfig {
  approvers: string;
  approvals: number;
  maxTtlMs: number;
}

export interface AccessConfig {
  maxTtlMs: number;
  pendingTtlMs: number;
  admins: string[];
  resources: Record<string, ResourceAccessConfig>;
  breakglass: { accounts: string[]; resources: string[]; ttlMs: number };
}

export interface NotificationsConfig {
  webhook: string | undefined;
  timeoutMs: number;
}

export const BREAKGLASS_MAX_MS = 3_600_000;

/**
 * The longest webhook timeout: a notification is awaited by the command that caused it,
 * and past 2^31-1 ms a timer fires at once (the webhook would be aborted every time).
 */
export const WEBHOOK_TIMEOUT_MAX_MS = 300_000;

function fail(section: string, e: z.ZodError): never {
  const i = e.issues[0]!;
  const path = [section, ...i.path.map(String)].join(".");
  throw new ZtError("ZT_CONFIG_INVALID", `${path}: ${i.message}`, { path });
}

/** Validates the `access:` section of zt.yaml; errors name the key path. */
export function parseAccessConfig(raw: unknown): AccessConfig {
  const r = accessSchema.safeParse(raw ?? {});
  if (!r.success) fail("access", r.error);
  const c = r.data;
  const maxTtlMs = parsePositiveConfigDuration(c.max_ttl, "access.max_ttl");
  const resources: Record<string, ResourceAccessConfig> = {};
  for (const [written, v] of Object.entries(c.resources)) {
    // One key per resource however it was written: `App::"x"` and `x` are the same App.
    const name = resourceKey(parseAccessResource(written, `access.resources.${written}`));
    if (Object.hasOwn(resources, name))
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `access.resources.${written}: ${name} is listed twice`,
        { path: `access.resources.${written}` },
      );
    resources[name] = {
      approvers: v.approvers,
      approvals: v.approvals,
      maxTtlMs:
        v.max_ttl === undefined
          ? maxTtlMs
          : parsePositiveConfigDuration(v.max_ttl, `access.resources.${written}.max_ttl`),
    };
  }
  const pendingTtlMs = parsePositiveConfigDuration(c.pending_ttl, "access.pending_ttl");
  const ttlMs = parsePositiveConfigDuration(c.breakglass.ttl, "access.breakglass.ttl");
  if (ttlMs > BREAKGLASS_MAX_MS)
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      "access.breakglass.ttl: expected a duration of at most 1h",
      { path: "access.breakglass.ttl" },
    );
  return {
    maxTtlMs,
    pendingTtlMs,
    admins: c.admins,
    resources,
    breakglass: {
      accounts: c.breakglass.accounts,
      resources: c.breakglass.resources.map((r, i) =>
        resourceKey(parseAccessResource(r, `access.breakglass.resources.${i}`)),
      ),
      ttlMs,
    },
  };
}

/** Validates the `notifications:` section of zt.yaml. */
export function parseNotificationsConfig(raw: unknown): NotificationsConfig {
  const r = notificationsSchema.safeParse(raw ?? {});
  if (!r.success) fail("notifications", r.error);
  const timeoutMs = parsePositiveConfigDuration(r.data.timeout, "notifications.timeout");
  if (timeoutMs > WEBHOOK_TIMEOUT_MAX_MS)
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `notifications.timeout: expected at most ${formatDuration(WEBHOOK_TIMEOUT_MAX_MS)}, got ${JSON.stringify(r.data.timeout)}`,
      { path: "notifications.timeout" },
    );
  return { webhook: r.data.webhook, timeoutMs };
}
