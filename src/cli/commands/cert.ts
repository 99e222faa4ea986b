import { spawn } from "node:child_process";
import { createPublicKey, X509Certificate, type KeyObject } from "node:crypto";
import { readInputFile } from "../../core/read-input-file.js";
import { join } from "node:path";
import type { Command } from "commander";
import { Agent, fetch as undiciFetch } from "undici";
import { ZtError } from "../../core/errors.js";
import { parseDuration } from "../../core/duration.js";
import {
  preparePrivateDirectory,
  readPrivateInputFile,
  writeFileAtomically,
  writePrivateFile,
} from "../../core/secure-files.js";
import {
  buildRenewalRequest,
  describeSvid,
  nextRenewalAtMs,
  parseSpiffeId,
  pkiService,
} from "../../pki/index.js";
import {
  loadCliConfig,
  openCliContext,
  printJson,
  printTable,
  privateKeyFromPem,
  serverUrl,
  usageError,
  withContext,
  withoutContext,
} from "../cli-context.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];
const iso = (ms: number) => new Date(ms).toISOString();

interface RenewOptions {
  cert: string;
  key: string;
  bundle?: string;
  server?: string;
  caFile?: string;
  ttl?: string;
  daemon?: boolean;
  exec?: string;
  json?: boolean;
}

/** `zt cert …`: X.509-SVIDs for workloads. */
export function registerCertCommands(program: Command): void {
  const cert = program.command("cert").description("X.509-SVIDs: issue, renew, list, revoke");

  cert
    .command("issue")
    .description("issue an SVID with a new key and write key (0600), chain and bundle to --out DIR")
    .requiredOption("--spiffe-id <id>", "spiffe://<trust domain>/<path>")
    .option(
      "--dns <name>",
      "SAN: a DNS name, or an IP address (written as an IP address SAN); repeatable",
      collect,
      [],
    )
    .option("--ttl <duration>", "lifetime (default pki.svid_ttl, at most pki.svid_max_ttl)")
    .requiredOption("--out <dir>", "directory for svid.key, svid.pem, chain.pem, bundle.pem")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { spiffeId: string; dns: string[]; ttl?: string; out: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const ttlMs = opts.ttl === undefined ? undefined : parseDuration(opts.ttl, "--ttl");
          const svc = await pkiService(ctx);
          const issued = await svc.issueSvidWithNewKey({
            spiffeId: opts.spiffeId,
            dnsNames: opts.dns,
            ttlMs,
            actor: "cli",
            // After the input is checked (bad input writes nothing), before the certificate
            // exists: a bad folder must not cost an issued SVID whose key is lost.
            beforeIssue: () => preparePrivateDirectory(opts.out),
          });
          writePrivateFile(join(opts.out, "svid.key"), issued.keyPem);
          writeFileAtomically(join(opts.out, "svid.pem"), issued.certPem, 0o644);
          writeFileAtomically(join(opts.out, "chain.pem"), issued.chainPem, 0o644);
          writeFileAtomically(join(opts.out, "bundle.pem"), issued.bundlePem, 0o644);
          const out = {
            serial: issued.serial,
            spiffe_id: issued.spiffeId,
            dns: issued.dnsNames,
            not_after: iso(issued.notAfterMs),
            dir: opts.out,
          };
          if (opts.json) printJson(out);
          else
            process.stdout.write(
              `issued ${out.spiffe_id} serial ${out.serial}, valid until ${out.not_after}, in ${out.dir}\n`,
            );
        }),
    );

  cert
    .command("list")
    .description("list issued SVIDs (unexpired, or --all)")
    .option("--all", "include expired certificates")
    .option("--json", "JSON output")
    .action(async (opts: { all?: boolean; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const rows = await (await pkiService(ctx)).listCerts({ all: opts.all ?? false });
        if (opts.json) return printJson(rows);
        printTable(
          rows.map((r) => ({ ...r, not_after: iso(r.not_after) })),
          ["serial", "spiffe_id", "key_type", "dns_names", "not_after", "status"],
        );
      }),
    );

  cert
    .command("revoke")
    .description("revoke an SVID by serial, or every unexpired SVID of --spiffe-id")
    .argument("[serial]", "hex serial")
    .option("--spiffe-id <id>", "revoke every unexpired SVID for this SPIFFE ID")
    .option(
      "--reason <reason>",
      "unspecified | key-compromise | affiliation-changed | superseded | cessation-of-operation | privilege-withdrawn",
      "unspecified",
    )
    .option("--json", "JSON output")
    .action(
      async (
        serial: string | undefined,
        opts: { spiffeId?: string; reason: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          if ((serial === undefined) === (opts.spiffeId === undefined))
            throw usageError("give a SERIAL or --spiffe-id (one of them)");
          // A value that is not an ID (a name, a path) matches nothing: say why.
          if (opts.spiffeId !== undefined) parseSpiffeId(opts.spiffeId);
          const serials = await (
            await pkiService(ctx)
          ).revoke({ serial, spiffeId: opts.spiffeId, reason: opts.reason, actor: "cli" });
          if (opts.json) printJson({ revoked: serials });
          else process.stdout.write(`revoked ${serials.join(", ")}\n`);
        }),
    );

  cert
    .command("renew")
    .description(
      "renew an SVID with a new key (once, or --daemon: at half its lifetime with jitter) and run --exec after",
    )
    .requiredOption("--cert <file>", "current certificate chain (PEM); replaced on renewal")
    .requiredOption("--key <file>", "current private key (PEM, 0600); replaced on renewal")
    .option("--bundle <file>", "where to write the trust bundle")
    .option("--server <url>", "zt API base URL (default: use the local store via --config)")
    .option("--ca-file <file>", "CA bundle to verify an https --server")
    .option("--ttl <duration>", "requested lifetime")
    .option("--daemon", "keep running and renew before expiry")
    .option("--exec <command>", "shell command to run after each renewal (e.g. reload a server)")
    .option("--json", "JSON output")
    .action(async (opts: RenewOptions, cmd: Command) => {
      if (!opts.daemon) return withoutContext(async () => void (await renewOnce(cmd, opts)));
      await withoutContext(async () => {
        for (;;) {
          const current = describeSvid(readInputFile(opts.cert));
          const at = nextRenewalAtMs(current.notBeforeMs, current.notAfterMs, Math.random());
          await sleep(Math.max(0, at - Date.now()));
          let backoff = 5_000;
          for (;;) {
            try {
              await renewOnce(cmd, opts);
              break;
            } catch (e) {
              const msg =
                e instanceof ZtError
                  ? `${e.code}: ${e.message}`
                  : String((e as Error)?.message ?? e);
              process.stderr.write(`zt: renewal failed (${msg}); retrying in ${backoff / 1000}s\n`);
              if (Date.now() + backoff >= current.notAfterMs) throw e;
              await sleep(backoff);
              backoff = Math.min(backoff * 2, 300_000);
            }
          }
        }
      });
    });

  const reg = cert
    .command("registration")
    .description("registration entries: which SPIFFE ID and names a join token may obtain");
  reg
    .command("add")
    .requiredOption("--spiffe-id <id>", "the SPIFFE ID this entry grants")
    .option(
      "--dns <name>",
      "a DNS name or IP address the holder may include (an IP goes in an IP address SAN); repeatable",
      collect,
      [],
    )
    .option("--max-ttl <duration>", "longest SVID lifetime for this entry")
    .option("--json", "JSON output")
    .action(
      async (
        opts: { spiffeId: string; dns: string[]; maxTtl?: string; json?: boolean },
        cmd: Command,
      ) =>
        withContext(cmd, async (ctx) => {
          const r = await (
            await pkiService(ctx)
          ).addRegistration(
            {
              spiffeId: opts.spiffeId,
              dnsNames: opts.dns,
              maxTtlMs:
                opts.maxTtl === undefined ? undefined : parseDuration(opts.maxTtl, "--max-ttl"),
            },
            "cli",
          );
          if (opts.json) printJson(r);
          else process.stdout.write(`registration ${r.id} for ${r.spiffeId}\n`);
        }),
    );
  reg
    .command("list")
    .option("--json", "JSON output")
    .action(async (opts: { json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const rows = await (await pkiService(ctx)).listRegistrations();
        if (opts.json) return printJson(rows);
        printTable(rows, ["id", "spiffe_id", "dns_names", "max_ttl_ms"]);
      }),
    );

  cert
    .command("token")
    .description("create a single-use join token for a registration entry (printed once)")
    .argument("<entry>", "registration id or SPIFFE ID")
    .option("--ttl <duration>", "token lifetime (default pki.join_token_ttl, at most 30d)")
    .option("--json", "JSON output")
    .action(async (entry: string, opts: { ttl?: string; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const t = await (
          await pkiService(ctx)
        ).createJoinToken(
          entry,
          "cli",
          opts.ttl === undefined ? undefined : parseDuration(opts.ttl, "--ttl"),
        );
        if (opts.json)
          printJson({
            token: t.token,
            expires_at: iso(t.expiresAtMs),
            registration: t.registrationId,
          });
        else process.stdout.write(`${t.token}\n`);
      }),
    );
}

/** One renewal: new key + CSR + proof by the old key; files replaced atomically. */
async function renewOnce(cmd: Command, opts: RenewOptions): Promise<void> {
  const currentChain = readInputFile(opts.cert);
  const currentKey = readPrivateInputFile(opts.key, "--key").toString("utf8");
  const req = await buildRenewalRequest(
    currentChain,
    privateKeyFromPem(currentKey, `--key ${opts.key}`),
  );
  let chain: string;
  let bundle: string;
  let serial: string;
  let notAfter: number;
  if (opts.server) {
    // Over https the current SVID is also the TLS client certificate (mTLS renewal);
    // the body carries the proof too, for a plain-HTTP API on loopback.
    const server = serverUrl(opts.server);
    const https = server.protocol === "https:";
    const dispatcher =
      https || opts.caFile
        ? new Agent({
            connect: {
              ...(opts.caFile ? { ca: readInputFile(opts.caFile) } : {}),
              ...(https ? { cert: currentChain, key: currentKey } : {}),
            },
          })
        : undefined;
    let res: Awaited<ReturnType<typeof undiciFetch>>;
    let body: Record<string, unknown>;
    try {
      res = await undiciFetch(new URL("/api/v1/svid", server), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          csr: req.csrPem,
          ...(opts.ttl ? { ttl: opts.ttl } : {}),
          renew: { cert: currentChain, proof: req.proof.toString("base64") },
        }),
        ...(dispatcher ? { dispatcher } : {}),
      });
      body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    } finally {
      // A daemon renews for months: no connection (or old client certificate) kept.
      await dispatcher?.close();
    }
    if (!res.ok) {
      const err = (body["error"] ?? {}) as { code?: string; message?: string };
      throw new ZtError(
        "ZT_UNAVAILABLE",
        `renewal refused by ${opts.server}: ${err.code ?? res.status} ${err.message ?? ""}`.trim(),
      );
    }
    // Checked before any file is replaced: a 200 from something else (a front proxy's
    // page, the wrong service) must not overwrite a working certificate and key.
    const issued = checkRenewalAnswer(body, req, opts.server);
    chain = issued.chain;
    bundle = issued.bundle;
    serial = issued.serial;
    notAfter = issued.notAfter;
  } else {
    // Local store (an operator host with the master key): the same checks as the API.
    const ctx = await openCliContext(loadCliConfig(cmd), { createStore: false });
    let issued;
    try {
      issued = await (
        await pkiService(ctx)
      ).issueSvid({
        csr: req.csrPem,
        ttlMs: opts.ttl === undefined ? undefined : parseDuration(opts.ttl, "--ttl"),
        auth: { kind: "svid", certDer: req.currentCertDer, proof: req.proof },
      });
    } finally {
      await ctx.close();
    }
    chain = issued.chainPem;
    bundle = issued.bundlePem;
    serial = issued.serial;
    notAfter = issued.notAfterMs;
  }
  // Key first, then the chain: a reader never sees a chain without its key.
  writePrivateFile(opts.key, req.keyPem);
  writePrivateFile(opts.cert, chain);
  if (opts.bundle) writeFileAtomically(opts.bundle, bundle, 0o644);
  if (opts.json) printJson({ serial, spiffe_id: req.spiffeId, not_after: iso(notAfter) });
  else
    process.stdout.write(
      `renewed ${req.spiffeId}: serial ${serial}, valid until ${iso(notAfter)}\n`,
    );
  if (opts.exec) await runHook(opts.exec);
}

/**
 * The API's answer to a renewal, trusted only if it holds an SVID for the new key and the
 * same SPIFFE ID, and a PEM bundle; otherwise ZT_UNAVAILABLE naming the server.
 */
function checkRenewalAnswer(
  body: Record<string, unknown>,
  req: { keyPem: string; spiffeId: string },
  server: string,
): { chain: string; bundle: string; serial: string; notAfter: number } {
  const refuse = (why: string) =>
    new ZtError("ZT_UNAVAILABLE", `${server} answered without ${why}; nothing was replaced`);
  const chain = body["cert_chain"];
  const bundle = body["bundle"];
  if (typeof chain !== "string") throw refuse("a certificate chain");
  let svid: ReturnType<typeof describeSvid>;
  try {
    svid = describeSvid(chain);
  } catch {
    throw refuse("a certificate chain that parses");
  }
  const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  if (
    !spki(new X509Certificate(svid.der).publicKey).equals(spki(createPublicKey(req.keyPem))) ||
    svid.spiffeId !== req.spiffeId
  )
    throw refuse(`a certificate for the new key and ${req.spiffeId}`);
  if (typeof bundle !== "string" || !bundle.includes("-----BEGIN CERTIFICATE-----"))
    throw refuse("a trust bundle certificate");
  return {
    chain,
    bundle,
    serial: typeof body["serial"] === "string" ? body["serial"] : "?",
    notAfter: svid.notAfterMs,
  };
}

function runHook(command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn("/bin/sh", ["-c", command], { stdio: "inherit" });
    p.on("error", reject);
    p.on("close", (code) =>
      code === 0
        ? resolve()
        : reject(new ZtError("ZT_INTERNAL", `--exec command exited with ${code}`)),
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.min(ms, 2_147_000_000)));
}
