import type { Command } from "commander";
import { replaceFile } from "../../core/secure-files.js";
import { initPki, pkiService } from "../../pki/index.js";
import { printJson, printTable, usageError, withContext } from "../cli-context.js";

const DER_TO_PEM = (der: Buffer) =>
  `-----BEGIN X509 CRL-----\n${(der.toString("base64").match(/.{1,64}/g) ?? []).join("\n")}\n-----END X509 CRL-----\n`;

/** `zt ca …`: the X.509 CA (root, intermediates, bundle, CRL). */
export function registerCaCommands(program: Command): void {
  const ca = program.command("ca").description("zt's X.509 certificate authority");

  ca.command("init")
    .description("create the root, intermediate and SSH CAs if missing (zt init does this too)")
    .action(async (_opts: unknown, cmd: Command) =>
      withContext(
        cmd,
        async (ctx) => {
          await initPki(ctx);
          process.stdout.write("CA ready\n");
        },
        { create: true },
      ),
    );

  ca.command("show")
    .description("list the CAs: roots, intermediates (active and retired), SSH CAs")
    .option("--json", "JSON output")
    .action(async (opts: { json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const svc = await pkiService(ctx);
        const cas = svc.cas;
        const rows = [
          ...[...cas.roots, ...cas.intermediates].map((c) => ({
            id: c.id,
            kind: c.kind,
            status: c.status,
            subject: c.cert.subject,
            not_after: new Date(c.notAfterMs).toISOString(),
          })),
          ...[cas.sshUser, cas.sshHost].map((c) => ({
            id: c.id,
            kind: c.kind,
            status: c.status,
            subject: c.publicLine,
            not_after: "-",
          })),
        ];
        if (opts.json) return printJson(rows);
        printTable(rows, ["id", "kind", "status", "not_after", "subject"]);
      }),
    );

  ca.command("bundle")
    .description("print the trust bundle: PEM roots, or the SPIFFE bundle (JWK set, use x509-svid)")
    .option("--format <format>", "pem | spiffe", "pem")
    .action(async (opts: { format: string }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const svc = await pkiService(ctx);
        if (opts.format === "pem") process.stdout.write(svc.bundlePem());
        else if (opts.format === "spiffe") printJson(svc.spiffeBundle());
        else throw usageError("--format: expected pem or spiffe");
      }),
    );

  ca.command("crl")
    .description("write the current CRL of the active intermediate")
    .option("--out <file>", "file to write (default stdout, PEM)")
    .option("--der", "DER instead of PEM")
    .action(async (opts: { out?: string; der?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const der = await (await pkiService(ctx)).crlDer();
        const data = opts.der ? der : DER_TO_PEM(der);
        if (opts.out) replaceFile(opts.out, data);
        else process.stdout.write(data);
      }),
    );

  ca.command("rotate-intermediate")
    .description("issue a new intermediate; the old one keeps verifying until it expires")
    .action(async (_opts: unknown, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const id = await (await pkiService(ctx)).rotateIntermediate("cli");
        process.stdout.write(`new intermediate ${id}\n`);
      }),
    );
}
