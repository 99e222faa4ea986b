import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";

/** Serial of the certificate a TLS listener on 127.0.0.1:port serves now (not verified). */
export function servedSerial(port: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const s = tlsConnect(
      { host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false },
      () => {
        resolve(s.getPeerCertificate().serialNumber);
        s.destroy();
      },
    );
    s.on("error", reject);
  });
}

/** Waits (up to 20 s) until the listener serves another certificate than `first`; returns its serial. */
export async function nextServedSerial(port: number, first: string): Promise<string> {
  let now = first;
  for (let i = 0; i < 200 && now === first; i++) {
    await new Promise((r) => setTimeout(r, 100));
    now = await servedSerial(port);
  }
  return now;
}

/**
 * Makes a new P-256 key (`keyOut`) and, with the real `openssl req`, a self-signed
 * certificate valid `days` (default 1), or with `csr: true` a certificate request, for
 * `subj` with the subjectAltName `san` (OpenSSL's syntax: `URI:…,DNS:…,IP:…`). Returns
 * what it wrote to `out`, as text.
 */
export function opensslRequest(o: {
  keyOut: string;
  out: string;
  subj: string;
  san?: string;
  csr?: boolean;
  days?: number;
}): string {
  const kind = o.csr ? ["-new"] : ["-x509", "-days", String(o.days ?? 1)];
  execFileSync(
    "openssl",
    [
      "req",
      ...kind,
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      o.keyOut,
      "-out",
      o.out,
      "-subj",
      o.subj,
      ...(o.san === undefined ? [] : ["-addext", `subjectAltName=${o.san}`]),
    ],
    { stdio: "pipe" },
  );
  return readFileSync(o.out, "utf8");
}

/** A private CA and a server certificate it signed, made by the real `openssl` CLI. */
export interface PrivateCa {
  dir: string;
  /** Paths: the CA certificate (PEM), the server's key and certificate. */
  caFile: string;
  serverKeyFile: string;
  serverCertFile: string;
  /** The server key and certificate chain as text, for a Node TLS server. */
  serverKey: string;
  serverCert: string;
}

/**
 * Creates, in `dir` (P-256 keys, valid two days): `ca.pem`/`ca.key`, and `server.pem`/`server.key`
 * for `dnsName` (subjectAltName DNS), signed by that CA. With `intermediates: n`, the CA
 * signs intermediate CA 1 (`intermediate-1.pem`), which signs 2 … and the last signs the
 * server's certificate; `serverCert` is then the chain a server sends (its certificate,
 * then the intermediates, nearest first). With `other`, also `other-ca.pem`: a second CA
 * that signed nothing here.
 */
export function makePrivateCa(
  dir: string,
  dnsName: string,
  o: { other?: boolean; intermediates?: number } = {},
): PrivateCa {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const selfSigned = (key: string, out: string, cn: string) =>
    run([
      "req",
      "-x509",
      ...newKey,
      "-keyout",
      key,
      "-out",
      out,
      "-days",
      "2",
      "-subj",
      `/CN=${cn}`,
    ]);
  /** A certificate for `name`'s new key, signed by the CA whose files are `ca`.pem/.key. */
  const signed = (name: string, cn: string, ca: string, ext: string) => {
    run(["req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`]);
    writeFileSync(join(dir, `${name}.cnf`), ext);
    run([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.pem`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.cnf`,
    ]);
  };
  selfSigned("ca.key", "ca.pem", "zt test private CA");
  let issuer = "ca";
  const chain: string[] = [];
  for (let i = 1; i <= (o.intermediates ?? 0); i++) {
    const name = `intermediate-${i}`;
    signed(
      name,
      `zt test intermediate CA ${i}`,
      issuer,
      "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    chain.unshift(name);
    issuer = name;
  }
  signed("server", dnsName, issuer, `subjectAltName=DNS:${dnsName}\n`);
  if (o.other) selfSigned("other.key", "other-ca.pem", "someone else");
  const path = (f: string) => join(dir, f);
  const read = (f: string) => readFileSync(path(f), "utf8");
  return {
    dir,
    caFile: path("ca.pem"),
    serverKeyFile: path("server.key"),
    serverCertFile: path("server.pem"),
    serverKey: read("server.key"),
    serverCert: ["server", ...chain].map((f) => read(`${f}.pem`)).join(""),
  };
}
