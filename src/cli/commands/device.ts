import { hostname } from "node:os";
import type { Command } from "commander";
import { isZtError, ZtError } from "../../core/errors.js";
import { readInputFile } from "../../core/read-input-file.js";
import { fileExists, readPrivateInputFile } from "../../core/secure-files.js";
import { SESSION_TOKEN_RE } from "../../session/index.js";
import {
  bindPayload,
  collectPosture,
  defaultKeyDir,
  deviceKeyPath,
  DeviceService,
  generateDeviceKey,
  loadDeviceKey,
  saveDeviceKey,
  signWithDeviceKey,
  type DeviceInfo,
  type PostureReport,
} from "../../device/index.js";
import {
  printJson,
  printTable,
  serverRefusal,
  serverUrl,
  usageError,
  withContext,
  withoutContext,
  userIdByName,
} from "../cli-context.js";
import { actingUser } from "./access.js";

function deviceJson(d: DeviceInfo): Record<string, unknown> {
  return {
    id: d.id,
    user: d.userName,
    name: d.name,
    status: d.status,
    compliant: d.compliantNow,
    score: d.score,
    os: d.os,
    last_report: d.lastReportAt === null ? null : new Date(d.lastReportAt).toISOString(),
    checks: d.checks,
  };
}

function print(d: DeviceInfo, json: boolean | undefined): void {
  if (json) printJson(deviceJson(d));
  else
    printTable(
      [deviceJson(d)],
      ["id", "user", "name", "status", "compliant", "score", "os", "last_report"],
    );
}

/** Builds the report payload from collected or given facts (`--facts FILE`: { os, checks }). */
async function buildReport(
  deviceId: string,
  factsFile: string | undefined,
  now: number,
): Promise<PostureReport> {
  if (factsFile) {
    let raw: unknown;
    try {
      raw = JSON.parse(readInputFile(factsFile));
    } catch (e) {
      if (isZtError(e)) throw e;
      throw new ZtError("ZT_DEVICE_INVALID", `--facts ${factsFile}: not a readable JSON file`);
    }
    const facts = parseFacts(raw, factsFile);
    return {
      v: 1,
      device_id: deviceId,
      collected_at: now,
      os: facts.os ?? "unknown",
      checks: (facts.checks ?? {}) as PostureReport["checks"],
    };
  }
  const p = await collectPosture();
  return {
    v: 1,
    device_id: deviceId,
    collected_at: now,
    os: p.os,
    checks: p.checks,
    evidence: p.evidence,
  };
}

/**
 * The `--facts` file's content: a JSON object whose `os`, when present, is a string and
 * whose `checks`, when present, is an object (the server checks each check). Anything
 * else (null, an array, a number) is refused naming the file, not sent as "no facts".
 */
function parseFacts(raw: unknown, file: string): { os?: string; checks?: object } {
  const bad = (what: string) =>
    new ZtError("ZT_DEVICE_INVALID", `--facts ${file}: ${what}`, { field: "--facts" });
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw bad('expected a JSON object { "os": "…", "checks": { … } }');
  const { os, checks } = raw as { os?: unknown; checks?: unknown };
  if (os !== undefined && typeof os !== "string") throw bad("os: expected a string");
  if (
    checks !== undefined &&
    (typeof checks !== "object" || checks === null || Array.isArray(checks))
  )
    throw bad("checks: expected an object of check names to true, false or null");
  return {
    ...(os !== undefined ? { os } : {}),
    ...(checks !== undefined ? { checks } : {}),
  };
}

/**
 * POSTs to the zt API; a refusal is the server's own error (its code and exit code), and
 * a 200 whose body is not a JSON object (a front proxy's page) is ZT_UNAVAILABLE.
 */
async function postJson(
  server: URL,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const res = await fetch(new URL(path, server), {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const json = (await res.json().catch(() => undefined)) as unknown;
  if (!res.ok) throw serverRefusal(server.origin, res.status, json);
  if (typeof json !== "object" || json === null || Array.isArray(json)) return {};
  return json as Record<string, unknown>;
}

/** The API's answer to a report, checked: a 200 from something else is no verdict. */
function reportAnswer(server: URL, deviceId: string, res: Record<string, unknown>) {
  const { device_id, score, compliant, failures } = res;
  if (
    device_id !== deviceId ||
    typeof score !== "number" ||
    typeof compliant !== "boolean" ||
    !Array.isArray(failures)
  )
    throw new ZtError(
      "ZT_UNAVAILABLE",
      `${server.origin}: the answer is not a posture verdict for ${deviceId}; the report may not have been received`,
    );
  return { device_id, score, compliant, failures: failures as unknown[] };
}

/**
 * The session token `zt device bind` proves possession of: from `--session-token-file`
 * (a 0600 file) or `$ZT_SESSION_TOKEN` — never from the command line, where other users
 * could read it. It is the session cookie's value (zt_session=<token>) or the Bearer
 * token; a bare session id is not a credential and is refused.
 */
function sessionToken(file: string | undefined): string {
  let token: string | undefined;
  let from: string;
  if (file !== undefined) {
    token = readPrivateInputFile(file, "--session-token-file").toString("utf8").trim();
    from = `--session-token-file ${file}`;
  } else {
    token = process.env["ZT_SESSION_TOKEN"]?.trim();
    from = "ZT_SESSION_TOKEN";
  }
  if (!token)
    throw usageError(
      "bind needs the session's own token: put the session cookie's value in ZT_SESSION_TOKEN or a 0600 file given as --session-token-file (a session id alone is not enough)",
    );
  if (!SESSION_TOKEN_RE.test(token))
    throw usageError(
      `${from}: not a session token (expected the 43-character session cookie value, not a ses_… id)`,
    );
  return token;
}

/** `zt device enroll|approve|revoke|list|show|report|bind` — device trust. */
export function registerDeviceCommands(program: Command): void {
  const device = program
    .command("device")
    .description("device trust: enrolment, approval, signed posture reports");

  device
    .command("enroll")
    .description(
      "create this device's Ed25519 key (0600 file) and register it for a user (pending unless auto-approved)",
    )
    .option("--as <user>", "the device's owner (default: $ZT_USER)")
    .option(
      "--name <name>",
      "device name",
      hostname()
        .replace(/[^A-Za-z0-9._-]/g, "-")
        .slice(0, 63) || "device",
    )
    .option("--key-dir <dir>", "where to keep the device key (default: ~/.config/zt)")
    .option("--force", "replace an existing device key file")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { as?: string; name: string; keyDir?: string; force?: boolean; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const user = actingUser(opts.as, "the device's owner");
          const keyDir = opts.keyDir ?? defaultKeyDir(process.env);
          if (fileExists(deviceKeyPath(keyDir)) && !opts.force)
            throw new ZtError(
              "ZT_CONFLICT",
              `${deviceKeyPath(keyDir)} exists: this device is enrolled (use --force to replace it)`,
            );
          const key = generateDeviceKey();
          const r = await new DeviceService(ctx).enroll({
            userName: user,
            name: opts.name,
            publicKeyPem: key.publicPem,
          });
          const path = saveDeviceKey(keyDir, {
            device_id: r.device.id,
            name: r.device.name,
            user,
            private_key: key.privatePem,
          });
          if (opts.json)
            printJson({ ...deviceJson(r.device), key_file: path, auto_approved: r.autoApproved });
          else
            process.stdout.write(
              `enrolled ${r.device.id} (${r.device.status}${r.autoApproved ? ", auto-approved" : ", ask an admin: zt device approve " + r.device.id}); key in ${path}\n`,
            );
        }),
    );

  for (const [verb, what] of [
    ["approve", "approve a pending device"],
    ["revoke", "revoke a device: it stops counting as managed at once"],
  ] as const) {
    device
      .command(verb)
      .description(what)
      .argument("<id>", "device id")
      .option(
        "--as <user>",
        "who does it (recorded in the audit log; default: $ZT_USER or 'admin')",
      )
      .option("--json", "JSON output")
      .action(async (id: string, opts: { as?: string; json?: boolean }, cmd: Command) =>
        withContext(cmd, async (ctx) => {
          // ZT_USER="" is unset: an empty actor would leave the audit record without one.
          const by = opts.as ?? (process.env["ZT_USER"] || "admin");
          const svc = new DeviceService(ctx);
          print(
            verb === "approve" ? await svc.approve(id, by) : await svc.revoke(id, by),
            opts.json,
          );
        }),
      );
  }

  device
    .command("list")
    .description("enrolled devices and their posture")
    .option("--user <name>", "only this user's devices")
    .option("--json", "JSON output")
    .action(async (opts: { user?: string; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        if (opts.user) await userIdByName(ctx, opts.user);
        const list = await new DeviceService(ctx).list(opts.user ? { userName: opts.user } : {});
        if (opts.json) printJson(list.map(deviceJson));
        else
          printTable(list.map(deviceJson), [
            "id",
            "user",
            "name",
            "status",
            "compliant",
            "score",
            "os",
            "last_report",
          ]);
      }),
    );

  device
    .command("show")
    .argument("<id>", "device id")
    .option("--json", "JSON output")
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => printJson(deviceJson(await new DeviceService(ctx).get(id)))),
    );

  device
    .command("report")
    .description(
      "collect this device's posture (apt, LUKS, nftables/ufw, screen lock, AV, OS), sign it with the device key and send it",
    )
    .option("--key-dir <dir>", "where the device key is (default: ~/.config/zt)")
    .option(
      "--facts <file>",
      "send these facts ({ os, checks }) instead of collecting them (agents, tests)",
    )
    .option("--server <url>", "send through the zt API at this URL instead of the local store")
    .option("--dry-run", "print the signed report, send nothing")
    .option("--json", "JSON output")
    .action(
      async (
        opts: {
          keyDir?: string;
          facts?: string;
          server?: string;
          dryRun?: boolean;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const keyDir = opts.keyDir ?? defaultKeyDir(process.env);
        const build = async (now: number) => {
          const key = loadDeviceKey(keyDir);
          const report = await buildReport(key.device_id, opts.facts, now);
          const payload = JSON.stringify(report);
          return { key, payload, signature: signWithDeviceKey(key.private_key, payload) };
        };
        if (opts.dryRun || opts.server) {
          await withoutContext(async () => {
            const r = await build(Date.now());
            if (opts.dryRun)
              return printJson({
                device_id: r.key.device_id,
                payload: JSON.parse(r.payload) as unknown,
                signature: r.signature,
              });
            const server = serverUrl(opts.server!);
            const res = reportAnswer(
              server,
              r.key.device_id,
              await postJson(server, `/v1/devices/${encodeURIComponent(r.key.device_id)}/reports`, {
                payload: r.payload,
                signature: r.signature,
              }),
            );
            printJson(res);
            // As against the store: exit 3 when the device is non-compliant.
            return res.compliant ? 0 : 3;
          });
          return;
        }
        await withContext(cmd, async (ctx) => {
          const r = await build(ctx.clock.now());
          const s = await new DeviceService(ctx).submitReport(
            r.key.device_id,
            r.payload,
            r.signature,
          );
          if (opts.json)
            printJson({
              device_id: r.key.device_id,
              score: s.score,
              compliant: s.compliant,
              failures: s.failures,
            });
          else
            process.stdout.write(
              `${r.key.device_id}: score ${s.score}, ${s.compliant ? "compliant" : `NON-COMPLIANT (${s.failures.join(", ")})`}\n`,
            );
          return s.compliant ? 0 : 3;
        });
      },
    );

  device
    .command("bind")
    .description(
      "bind your session to this device: the request is authenticated by the session's own token and signed with the device key; policies then see context.device",
    )
    .option(
      "--session-token-file <file>",
      "file (mode 0600) holding the session token (the session cookie's value); default: $ZT_SESSION_TOKEN",
    )
    .option(
      "--session <id>",
      "optional check: refuse unless the token is this session's (ses_…, from the login response)",
    )
    .option("--key-dir <dir>", "where the device key is (default: ~/.config/zt)")
    .option("--server <url>", "send through the zt API at this URL instead of the local store")
    .option("--json", "JSON output")
    .action(
      async (
        opts: {
          sessionTokenFile?: string;
          session?: string;
          keyDir?: string;
          server?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const keyDir = opts.keyDir ?? defaultKeyDir(process.env);
        const done = (r: { session_id: string; device_id: string }) => {
          if (opts.json) printJson({ bound: true, ...r });
          else process.stdout.write(`bound ${r.session_id} to ${r.device_id}\n`);
        };
        const checkSessionOption = () => {
          if (opts.session !== undefined && !/^ses_[A-Za-z0-9_-]+$/.test(opts.session))
            throw usageError("--session: expected a session id (ses_…)");
        };
        if (opts.server) {
          await withoutContext(async () => {
            const server = serverUrl(opts.server!, "--server", "the session token");
            checkSessionOption();
            const token = sessionToken(opts.sessionTokenFile);
            const key = loadDeviceKey(keyDir);
            const at = Date.now();
            const signature = signWithDeviceKey(
              key.private_key,
              bindPayload({ deviceId: key.device_id, sessionToken: token, at }),
            );
            const res = await postJson(
              server,
              `/v1/devices/${encodeURIComponent(key.device_id)}/bind`,
              {
                at,
                signature,
                ...(opts.session !== undefined ? { session_id: opts.session } : {}),
              },
              { authorization: `Bearer ${token}` },
            );
            const sessionId = res["session_id"];
            if (res["bound"] !== true || typeof sessionId !== "string")
              throw new ZtError(
                "ZT_UNAVAILABLE",
                `${server.origin}: the answer is not a binding of ${key.device_id}; nothing is known to be bound`,
              );
            done({ session_id: sessionId, device_id: key.device_id });
          });
          return;
        }
        await withContext(cmd, async (ctx) => {
          checkSessionOption();
          const token = sessionToken(opts.sessionTokenFile);
          const key = loadDeviceKey(keyDir);
          const at = ctx.clock.now();
          const r = await new DeviceService(ctx).bindSession({
            deviceId: key.device_id,
            sessionToken: token,
            at,
            signature: signWithDeviceKey(
              key.private_key,
              bindPayload({ deviceId: key.device_id, sessionToken: token, at }),
            ),
            sessionId: opts.session,
          });
          done({ session_id: r.sessionId, device_id: key.device_id });
        });
      },
    );
}
