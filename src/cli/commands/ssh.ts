import { readFileSync, statSync } from "node:fs";
import type { Command } from "commander";
import { Agent, fetch as undiciFetch } from "undici";
import { ZtError } from "../../core/errors.js";
import { parseDuration } from "../../core/duration.js";
import {
  assertPrivateInputFile,
  replaceFile,
  writeFileAtomically,
} from "../../core/secure-files.js";
import { readInputFile } from "../../core/read-input-file.js";
import { pkiService } from "../../pki/index.js";
import {
  assertPemCertificate,
  printJson,
  privateKeyFromPem,
  serverRefusal,
  serverUrl,
  withContext,
  withoutContext,
} from "../cli-context.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];
const MAX_KEY_FILE = 16 * 1024;

function readKeyFile(path: string): string {
  // Checked before reading: a FIFO would block forever, /dev/zero never end.
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new ZtError("ZT_NOT_FOUND", `cannot read ${path}`);
  }
  if (!st.isFile())
    throw new ZtError("ZT_PKI_KEY_INVALID", `${path} is not a regular file (a .pub key file)`);
  if (st.size > MAX_KEY_FILE)
    throw new ZtError("ZT_PKI_KEY_INVALID", `${path} is too large to be a public key`);
  let text: Buffer;
  try {
    text = readFileSync(path);
  } catch {
    throw new ZtError("ZT_NOT_FOUND", `cannot read ${path}`);
  }
  if (text.length > MAX_KEY_FILE)
    throw new ZtError("ZT_PKI_KEY_INVALID", `${path} is too large to be a public key`);
  return text.toString("utf8");
}

/** `id_ed25519.pub` → `id_ed25519-cert.pub`, as ssh looks for it. */
function certPathFor(keyPath: string): string {
  return keyPath.endsWith(".pub") ? `${keyPath.slice(0, -4)}-cert.pub` : `${keyPath}-cert.pub`;
}

interface SignOptions {
  key: string;
  principal: string[];
  user?: string;
  hostGroup: string;
  ttl?: string;
  sourceAddress: string[];
  forceCommand?: string;
  pty: boolean;
  portForwarding: boolean;
  agentForwarding: boolean;
  x11Forwarding: boolean;
  userRc: boolean;
  out?: string;
  json?: boolean;
  server?: string;
  caFile?: string;
  clientCert?: string;
  clientKey?: string;
}

/** What the signer returned, from the local store or the API. */
interface SignedLine {
  certLine: string;
  serial: string;
  keyId: string;
  principals: string[];
  validBeforeMs: number;
  decisionId: string | undefined;
}

/**
 * The SVID's private key (`--client-key`): refused when group or others can read or write
 * it (ZT_FILE_PERMISSIONS, "chmod 600"), as ssh refuses such an identity file and as
 * `zt cert renew --key` refuses it: a key others can read is no proof of who we are.
 */
function readClientKey(path: string): string {
  assertPrivateInputFile(path, "--client-key");
  return readInputFile(path, MAX_KEY_FILE);
}

/**
 * `zt ssh sign --server URL`: asks the API (`POST /api/v1/ssh/sign`) as the session in
 * ZT_SESSION_TOKEN (kept off the command line) or as an SVID (--client-cert/--client-key).
 */
async function signViaApi(opts: SignOptions, without: string[]): Promise<SignedLine> {
  const token = process.env["ZT_SESSION_TOKEN"];
  const server = serverUrl(opts.server!, "--server", token ? "the session token" : undefined);
  if (!token && !opts.clientCert)
    throw new ZtError(
      "ZT_AUTH_REQUIRED",
      "--server needs a session in ZT_SESSION_TOKEN, or --client-cert and --client-key (an SVID)",
    );
  if (opts.user !== undefined)
    throw new ZtError("ZT_USAGE", "--user: with --server the signed-in session names the user");
  if ((opts.clientCert === undefined) !== (opts.clientKey === undefined))
    throw new ZtError("ZT_USAGE", "give --client-cert and --client-key together");
  let client: { cert: string; key: string } | undefined;
  if (opts.clientCert && opts.clientKey) {
    // Checked here: TLS would fail on them later, as if the server could not be reached.
    client = { cert: readInputFile(opts.clientCert), key: readClientKey(opts.clientKey) };
    assertPemCertificate(client.cert, `--client-cert ${opts.clientCert}`);
    privateKeyFromPem(client.key, `--client-key ${opts.clientKey}`);
  }
  const dispatcher = new Agent({
    connect: {
      ...(opts.caFile ? { ca: readInputFile(opts.caFile) } : {}),
      ...(client ?? {}),
    },
  });
  try {
    const res = await undiciFetch(new URL("/api/v1/ssh/sign", server), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({
        public_key: readKeyFile(opts.key),
        principals: opts.principal,
        host_group: opts.hostGroup,
        ...(opts.ttl !== undefined ? { ttl: opts.ttl } : {}),
        ...(opts.sourceAddress.length > 0 ? { source_addresses: opts.sourceAddress } : {}),
        ...(opts.forceCommand !== undefined ? { force_command: opts.forceCommand } : {}),
        ...(without.length > 0 ? { without_extensions: without } : {}),
      }),
      dispatcher,
    });
    const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) throw serverRefusal(opts.server!, res.status, body);
    const certLine = body["certificate"];
    // A 200 from something else (a front proxy's page) must not become the cert file.
    if (typeof certLine !== "string" || !/^\S+-cert-v01@openssh\.com \S+/.test(certLine))
      throw new ZtError(
        "ZT_UNAVAILABLE",
        `${opts.server}: the answer holds no OpenSSH certificate; nothing was written`,
      );
    return {
      certLine,
      serial: String(body["serial"]),
      keyId: String(body["key_id"]),
      principals: (body["principals"] as string[]) ?? [],
      validBeforeMs: Number(body["valid_before"]),
      decisionId: body["decision_id"] === undefined ? undefined : String(body["decision_id"]),
    };
  } finally {
    await dispatcher.close();
  }
}

function writeSigned(opts: SignOptions, signed: SignedLine): void {
  const out = opts.out ?? certPathFor(opts.key);
  replaceFile(out, signed.certLine, 0o644);
  const info = {
    file: out,
    serial: signed.serial,
    key_id: signed.keyId,
    principals: signed.principals,
    valid_before: new Date(signed.validBeforeMs).toISOString(),
    decision_id: signed.decisionId,
  };
  if (opts.json) printJson(info);
  else
    process.stdout.write(
      `wrote ${out}: serial ${info.serial}, valid until ${info.valid_before} (decision ${info.decision_id})\n`,
    );
}

/** `zt ssh …`: the SSH CA (user and host certificates, KRL). */
export function registerSshCommands(program: Command): void {
  const ssh = program.command("ssh").description("SSH certificate authority");

  ssh
    .command("sign")
    .description('sign a user key (a policy decision: Action::"ssh:sign" on HostGroup::"<group>")')
    .requiredOption("--key <file>", "the user's public key (.pub)")
    .requiredOption(
      "--principal <name>",
      "login name the certificate is valid for (repeatable)",
      collect,
      [],
    )
    .option("--user <name>", "the zt user (default: the first principal)")
    .option("--host-group <group>", "host group being asked for", "default")
    .option("--ttl <duration>", "lifetime (default pki.ssh.user_ttl = 8h, at most 24h)")
    .option("--source-address <cidr>", "accept only from these addresses (repeatable)", collect, [])
    .option("--force-command <cmd>", "command forced on login")
    .option("--no-pty", "leave out permit-pty")
    .option("--no-port-forwarding", "leave out permit-port-forwarding")
    .option("--no-agent-forwarding", "leave out permit-agent-forwarding")
    .option("--no-x11-forwarding", "leave out permit-X11-forwarding")
    .option("--no-user-rc", "leave out permit-user-rc")
    .option("--out <file>", "certificate file (default: <key>-cert.pub)")
    .option(
      "--server <url>",
      "ask the zt API instead of the local store (session in ZT_SESSION_TOKEN, or an SVID)",
    )
    .option("--ca-file <file>", "CA bundle to verify an https --server")
    .option("--client-cert <file>", "with --server: SVID chain to authenticate with (mTLS)")
    .option("--client-key <file>", "with --server: the SVID's private key")
    .option("--json", "JSON output")
    .action(async (opts: SignOptions, cmd: Command) => {
      const without = [
        ...(opts.pty ? [] : ["permit-pty"]),
        ...(opts.portForwarding ? [] : ["permit-port-forwarding"]),
        ...(opts.agentForwarding ? [] : ["permit-agent-forwarding"]),
        ...(opts.x11Forwarding ? [] : ["permit-X11-forwarding"]),
        ...(opts.userRc ? [] : ["permit-user-rc"]),
      ];
      if (opts.server)
        return withoutContext(async () => writeSigned(opts, await signViaApi(opts, without)));
      return withContext(cmd, async (ctx) => {
        const signed = await (
          await pkiService(ctx)
        ).ssh.signUser({
          publicKey: readKeyFile(opts.key),
          user: opts.user ?? opts.principal[0] ?? "",
          hostGroup: opts.hostGroup,
          principals: opts.principal,
          ttlMs: opts.ttl === undefined ? undefined : parseDuration(opts.ttl, "--ttl"),
          sourceAddresses: opts.sourceAddress,
          forceCommand: opts.forceCommand,
          withoutExtensions: without,
          actor: "cli",
        });
        writeSigned(opts, signed);
      });
    });

  ssh
    .command("host-sign")
    .description("sign a host key (clients trust it with the `zt ssh known-hosts` line)")
    .requiredOption("--key <file>", "host public key, e.g. /etc/ssh/ssh_host_ed25519_key.pub")
    .requiredOption(
      "--hostname <name>",
      "host name the certificate is valid for (repeatable)",
      collect,
      [],
    )
    .option("--ttl <duration>", "lifetime (default pki.ssh.host_ttl = 30d)")
    .option("--out <file>", "certificate file (default: <key>-cert.pub)")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { key: string; hostname: string[]; ttl?: string; out?: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const signed = await (
            await pkiService(ctx)
          ).ssh.signHost({
            publicKey: readKeyFile(opts.key),
            hostnames: opts.hostname,
            ttlMs: opts.ttl === undefined ? undefined : parseDuration(opts.ttl, "--ttl"),
            actor: "cli",
          });
          const out = opts.out ?? certPathFor(opts.key);
          replaceFile(out, signed.certLine, 0o644);
          if (opts.json)
            printJson({ file: out, serial: signed.serial, principals: signed.principals });
          else process.stdout.write(`wrote ${out}: serial ${signed.serial}\n`);
        }),
    );

  ssh
    .command("ca-pub")
    .description("print the user CA line for sshd's TrustedUserCAKeys")
    .action(async (_opts: unknown, cmd: Command) =>
      withContext(
        cmd,
        async (ctx) => void process.stdout.write((await pkiService(ctx)).ssh.userCaLine() + "\n"),
      ),
    );

  ssh
    .command("known-hosts")
    .description("print the @cert-authority line for known_hosts")
    .option("--pattern <hosts>", "host pattern the CA is trusted for", "*")
    .action(async (opts: { pattern: string }, cmd: Command) =>
      withContext(
        cmd,
        async (ctx) =>
          void process.stdout.write(
            (await pkiService(ctx)).ssh.knownHostsLine(opts.pattern) + "\n",
          ),
      ),
    );

  ssh
    .command("revoke")
    .description(
      "revoke a certificate by SERIAL, or a public KEY file (and every certificate for it)",
    )
    .argument("<serial-or-key>", "decimal serial, or path to a .pub file")
    .option("--reason <text>", "reason recorded in the audit log", "unspecified")
    .option("--json", "JSON output")
    .action(async (target: string, opts: { reason: string; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const svc = await pkiService(ctx);
        const r = /^\d+$/.test(target)
          ? await svc.ssh.revoke({ serial: target, reason: opts.reason, actor: "cli" })
          : await svc.ssh.revoke({
              publicKey: readKeyFile(target),
              reason: opts.reason,
              actor: "cli",
            });
        if (opts.json) printJson(r);
        else
          process.stdout.write(
            `revoked ${r.key ? `key ${r.key} and ` : ""}${r.serials.length} certificate(s); run \`zt ssh krl --out FILE\` and ship it\n`,
          );
      }),
    );

  ssh
    .command("krl")
    .description("write the key revocation list for sshd's RevokedKeys")
    .requiredOption("--out <file>", "KRL file to write")
    .action(async (opts: { out: string }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const krl = await (await pkiService(ctx)).ssh.krl();
        // Atomically, through an exclusively created temp file: the KRL often goes to a
        // shared folder, where a planted file or symlink must never be written through.
        writeFileAtomically(opts.out, krl, 0o644);
        process.stdout.write(`wrote ${opts.out} (${krl.length} bytes)\n`);
      }),
    );
}
