/**
 * Regression tests for the PKI input-handling review: what a CSR, an SSH public key or a
 * renewal request may carry. Keys and CSRs come from the real openssl and ssh-keygen
 * where they can make them; what they refuse to make (an RSA key with public exponent 1,
 * a zero-padded modulus) is built by hand here and shown to the real tools, which read it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renewProofInput, type PkiService } from "../src/pki/index.js";
import { openPkiSuite, type PkiSuite } from "./helpers/pki-suite.js";
import { readDerChildren } from "../src/pki/der.js";
import { createApiServer } from "../src/api/index.js";
import { runZt, tempDir, writeConfig } from "./helpers/zt-process.js";

const POLICIES = `
@id("ops-ssh")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"prod");
`;

let env: PkiSuite["env"];
let svc: PkiService;
let dir: string;

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const len =
    n < 0x80
      ? Buffer.from([n])
      : n < 0x100
        ? Buffer.from([0x81, n])
        : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

function sshString(b: Buffer | string): Buffer {
  const body = typeof b === "string" ? Buffer.from(b, "latin1") : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** An openssl-made key and CSR. */
function opensslCsr(name: string, san: string, keyAlg: string[]) {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  execFileSync("openssl", ["genpkey", ...keyAlg, "-out", key], { stdio: "ignore" });
  execFileSync("openssl", [
    "req",
    "-new",
    "-key",
    key,
    "-subj",
    "/O=x",
    "-addext",
    `subjectAltName=${san}`,
    "-out",
    csr,
  ]);
  return { key, csr, pem: readFileSync(csr, "utf8") };
}

const pem = (der: Buffer, label: string) =>
  `-----BEGIN ${label}-----\n${der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END ${label}-----\n`;

/**
 * A real RSA CSR with its key swapped for (n, e = 1) and "signed" with the bare padded
 * digest: s^1 mod n = s, so no private key is needed and the self-signature proves nothing.
 */
function forgeExponentOneCsr(realPem: string): string {
  const der = Buffer.from(realPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
  const [outer] = readDerChildren(der);
  const [info] = readDerChildren(outer!.content);
  const [version, subject, spki, attrs] = readDerChildren(info!.content);
  const jwk = createPublicKey({ key: spki!.whole, format: "der", type: "spki" }).export({
    format: "jwk",
  });
  const weak = createPublicKey({ key: { ...jwk, e: "AQ" }, format: "jwk" }).export({
    format: "der",
    type: "spki",
  });
  const cri = tlv(0x30, Buffer.concat([version!.whole, subject!.whole, weak, attrs!.whole]));
  const digestInfo = Buffer.concat([
    Buffer.from("3031300d060960864801650304020105000420", "hex"),
    createHash("sha256").update(cri).digest(),
  ]);
  const em = Buffer.concat([
    Buffer.from([0, 1]),
    Buffer.alloc(256 - digestInfo.length - 3, 0xff),
    Buffer.from([0]),
    digestInfo,
  ]);
  const forged = tlv(
    0x30,
    Buffer.concat([
      cri,
      Buffer.from("300d06092a864886f70d01010b0500", "hex"),
      tlv(0x03, Buffer.concat([Buffer.from([0]), em])),
    ]),
  );
  return pem(forged, "CERTIFICATE REQUEST");
}

let cleanup: (() => Promise<void>) | undefined;
beforeAll(async () => {
  ({ dir, env, svc, cleanup } = await openPkiSuite("zt-pki-input-", POLICIES));
});
afterAll(() => cleanup?.());

describe("RSA public exponents", () => {
  it("stops an RSA CSR key with public exponent 1 (every signature 'verifies' under it) from being certified", async () => {
    const real = opensslCsr("e1", "URI:spiffe://example.test/ns/e1", [
      "-algorithm",
      "RSA",
      "-pkeyopt",
      "rsa_keygen_bits:2048",
    ]);
    const forgedPem = forgeExponentOneCsr(real.pem);
    const file = join(dir, "e1-forged.csr");
    writeFileSync(file, forgedPem);
    // The real openssl reads it and finds its self-signature good: the check is void.
    const v = spawnSync("openssl", ["req", "-in", file, "-noout", "-verify", "-text"], {
      encoding: "utf8",
    });
    expect(`${v.stdout}${v.stderr}`).toMatch(/verify OK|Certificate request self-signature ok/i);
    expect(v.stdout).toMatch(/Exponent: 1 \(0x1\)/);
    const before = (await svc.listCerts({ all: true })).length;
    await expect(
      svc.issueSvid({ csr: forgedPem, auth: { kind: "admin", actor: "test" } }),
    ).rejects.toMatchObject({ code: "ZT_PKI_KEY_INVALID", context: { reason: "key-exponent" } });
    expect((await svc.listCerts({ all: true })).length).toBe(before);
    // An ordinary RSA CSR (e = 65537) still issues.
    expect(
      (await svc.issueSvid({ csr: real.pem, auth: { kind: "admin", actor: "test" } })).spiffeId,
    ).toBe("spiffe://example.test/ns/e1");
  });

  it("stops an ssh-rsa key with public exponent 1 from being signed", async () => {
    const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const n = Buffer.from(String(publicKey.export({ format: "jwk" }).n), "base64url");
    const blob = Buffer.concat([
      sshString("ssh-rsa"),
      sshString(Buffer.from([1])),
      sshString(Buffer.concat([Buffer.from([0]), n])),
    ]);
    const line = `ssh-rsa ${blob.toString("base64")} weak@test`;
    const file = join(dir, "weak-e1.pub");
    writeFileSync(file, line + "\n");
    // ssh-keygen reads it as a 2048-bit RSA key.
    expect(execFileSync("ssh-keygen", ["-l", "-f", file], { encoding: "utf8" })).toMatch(
      /^2048 SHA256:\S+ weak@test \(RSA\)/,
    );
    await expect(
      svc.ssh.signHost({ publicKey: line, hostnames: ["web.example.test"], actor: "test" }),
    ).rejects.toMatchObject({
      code: "ZT_PKI_KEY_INVALID",
      context: { reason: "ssh-key-exponent" },
    });
    await expect(
      svc.ssh.signUser({
        publicKey: line,
        user: "alice",
        hostGroup: "prod",
        principals: ["alice"],
        actor: "test",
      }),
    ).rejects.toMatchObject({ code: "ZT_PKI_KEY_INVALID" });
  });
});

describe("SSH key encodings", () => {
  it("stops a revoked RSA key from being signed again when its modulus is sent zero-padded (ssh-keygen reads the same key, same fingerprint)", async () => {
    const key = join(dir, "padded");
    execFileSync("ssh-keygen", [
      "-q",
      "-t",
      "rsa",
      "-b",
      "2048",
      "-N",
      "",
      "-C",
      "p@test",
      "-f",
      key,
    ]);
    const pub = readFileSync(`${key}.pub`, "utf8");
    const revoked = await svc.ssh.revoke({
      publicKey: pub,
      actor: "test",
      reason: "key-compromise",
    });
    // Re-encode the same key with two more zero bytes before the modulus.
    const blob = Buffer.from(pub.split(" ")[1]!, "base64");
    let at = 0;
    const fields: Buffer[] = [];
    while (at < blob.length) {
      const len = blob.readUInt32BE(at);
      fields.push(blob.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    const [type, e, n] = fields;
    const padded = Buffer.concat([
      sshString(type!),
      sshString(e!),
      sshString(Buffer.concat([Buffer.from([0, 0]), n!])),
    ]);
    const line = `ssh-rsa ${padded.toString("base64")} p@test`;
    writeFileSync(join(dir, "padded-again.pub"), line + "\n");
    // OpenSSH reads it as the revoked key: same fingerprint as `zt ssh revoke` recorded.
    const fp = (f: string) =>
      execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", f], { encoding: "utf8" }).split(
        " ",
      )[1];
    expect(fp(join(dir, "padded-again.pub"))).toBe(fp(`${key}.pub`));
    expect(fp(`${key}.pub`)).toBe(revoked.key);
    const before = await env.ctx.store.db.selectFrom("pki_ssh_certs").select("serial").execute();
    await expect(
      svc.ssh.signUser({
        publicKey: line,
        user: "alice",
        hostGroup: "prod",
        principals: ["alice"],
        actor: "test",
      }),
    ).rejects.toMatchObject({
      code: "ZT_PKI_KEY_INVALID",
      context: { reason: "ssh-key-malformed" },
    });
    const after = await env.ctx.store.db.selectFrom("pki_ssh_certs").select("serial").execute();
    expect(after.length).toBe(before.length);
  });
});

describe("CSR PEM framing", () => {
  it("stops two CERTIFICATE REQUEST blocks in one input from being read as the first alone", async () => {
    const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    const a = opensslCsr("two-a", "URI:spiffe://example.test/ns/two-a", ec);
    const b = opensslCsr("two-b", "URI:spiffe://example.test/ns/two-b", ec);
    // openssl itself reads only the first block of such a file.
    const first = spawnSync("openssl", ["req", "-noout", "-text"], {
      input: a.pem + b.pem,
      encoding: "utf8",
    });
    expect(first.stdout).toContain("spiffe://example.test/ns/two-a");
    expect(first.stdout).not.toContain("two-b");
    const before = (await svc.listCerts({ all: true })).length;
    for (const input of [a.pem + b.pem, b.pem + "\n" + a.pem]) {
      await expect(
        svc.issueSvid({ csr: input, auth: { kind: "admin", actor: "test" } }),
      ).rejects.toMatchObject({ code: "ZT_PKI_CSR_INVALID", context: { reason: "pem-multiple" } });
    }
    expect((await svc.listCerts({ all: true })).length).toBe(before);
    // Explanatory text around one block (RFC 7468 §2, as `openssl req -text` writes) is fine.
    const text = execFileSync("openssl", ["req", "-in", a.csr, "-text"], { encoding: "utf8" });
    expect(
      (await svc.issueSvid({ csr: text, auth: { kind: "admin", actor: "test" } })).spiffeId,
    ).toBe("spiffe://example.test/ns/two-a");
  });
});

describe("renewal proofs", () => {
  it("stops a captured renewal request from being replayed: a new key whose certificate was revoked (key compromise) is certified again", async () => {
    const id = "spiffe://example.test/ns/replay";
    const first = await svc.issueSvidWithNewKey({ spiffeId: id, actor: "test" });
    const next = opensslCsr("replay-next", `URI:${id}`, [
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
    ]);
    const csrDer = execFileSync("openssl", ["req", "-in", next.csr, "-outform", "DER"]);
    const proof = sign("sha256", renewProofInput(csrDer), {
      key: first.keyPem,
      dsaEncoding: "der",
    });
    const certDer = Buffer.from(first.certPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const request = () => svc.issueSvid({ csr: next.pem, auth: { kind: "svid", certDer, proof } });
    const renewed = await request();
    // The new key leaks; the operator revokes the certificate that names it.
    await svc.revoke({ serial: renewed.serial, reason: "key-compromise", actor: "test" });
    // Whoever holds the leaked key and saw the request sends it again.
    const before = (await svc.listCerts({ all: true })).length;
    await expect(request()).rejects.toMatchObject({
      code: "ZT_AUTH_FAILED",
      context: { reason: "renew-proof-replayed" },
    });
    expect((await svc.listCerts({ all: true })).length).toBe(before);
    // The current SVID itself still renews (same key, and a fresh key with a fresh proof).
    const firstKey = join(dir, "replay-first.key");
    writeFileSync(firstKey, first.keyPem, { mode: 0o600 });
    const sameKeyCsr = execFileSync(
      "openssl",
      ["req", "-new", "-key", firstKey, "-subj", "/O=x", "-addext", `subjectAltName=URI:${id}`],
      { encoding: "utf8" },
    );
    expect(
      (await svc.issueSvid({ csr: sameKeyCsr, auth: { kind: "svid", certDer } })).spiffeId,
    ).toBe(id);
    const fresh = opensslCsr("replay-fresh", `URI:${id}`, [
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
    ]);
    const freshDer = execFileSync("openssl", ["req", "-in", fresh.csr, "-outform", "DER"]);
    const freshProof = sign("sha256", renewProofInput(freshDer), {
      key: first.keyPem,
      dsaEncoding: "der",
    });
    expect(
      (await svc.issueSvid({ csr: fresh.pem, auth: { kind: "svid", certDer, proof: freshProof } }))
        .spiffeId,
    ).toBe(id);
  });
});

describe("revoked SSH keys and host certificates", () => {
  it("stops `zt ssh revoke key.pub` of a host key from being undone by signing a host certificate for it again", async () => {
    const key = join(dir, "host-revoked");
    execFileSync("ssh-keygen", ["-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", key]);
    const pub = readFileSync(`${key}.pub`, "utf8");
    const host = { publicKey: pub, hostnames: ["db1.example.test"], actor: "test" };
    const first = await svc.ssh.signHost(host);
    const r = await svc.ssh.revoke({ publicKey: pub, actor: "test", reason: "key-compromise" });
    expect(r.serials).toEqual([first.serial]);
    // The real ssh-keygen finds the key in zt's KRL.
    const krl = join(dir, "host.krl");
    writeFileSync(krl, await svc.ssh.krl());
    const q = spawnSync("ssh-keygen", ["-Q", "-f", krl, `${key}.pub`], { encoding: "utf8" });
    expect(q.status).not.toBe(0);
    expect(q.stdout).toContain("REVOKED");
    await expect(svc.ssh.signHost(host)).rejects.toMatchObject({
      code: "ZT_PKI_REVOKED",
      context: { reason: "key-revoked", key: r.key },
    });
    const certs = await env.ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select("serial")
      .where("key_fingerprint", "=", r.key!)
      .execute();
    expect(certs.map((c) => c.serial)).toEqual([first.serial]);
    await env.ctx.audit.flush();
    const refusals = await env.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "ssh.host-sign")
      .where("reason", "=", "key-revoked")
      .execute();
    expect(refusals).toHaveLength(1);
    expect(JSON.parse(refusals[0]!.data)).toMatchObject({ code: "ZT_PKI_REVOKED", key: r.key });
  });
});

describe("what a CSR asks for (checked, found refused or ignored)", () => {
  const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
  const craft = (name: string, subj: string, exts: string[], keyAlg = ec) => {
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    execFileSync("openssl", ["genpkey", ...keyAlg, "-out", key], { stdio: "ignore" });
    const args = ["req", "-new", "-key", key, "-subj", subj, "-out", csr];
    for (const e of exts) args.push("-addext", e);
    execFileSync("openssl", args);
    return readFileSync(csr, "utf8");
  };
  const admin = { kind: "admin", actor: "test" } as const;

  it("copies nothing but the key: CA, key usage, EKU, name constraints, subject and extra names asked for are not in the SVID", async () => {
    const id = "spiffe://example.test/ns/greedy";
    const csr = craft("greedy", "/CN=root\\/evil/O=Evil Corp/emailAddress=x@evil.test", [
      `subjectAltName=URI:${id}`,
      "basicConstraints=critical,CA:TRUE,pathlen:5",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
      "extendedKeyUsage=codeSigning,OCSPSigning",
      "nameConstraints=critical,permitted;DNS:evil.test",
      "subjectKeyIdentifier=0102030405",
      "certificatePolicies=1.2.3.4",
    ]);
    // The request does ask for all of it (openssl reads it back).
    const asked = execFileSync("openssl", ["req", "-noout", "-text"], {
      input: csr,
      encoding: "utf8",
    });
    for (const wanted of [
      "CA:TRUE",
      "Certificate Sign",
      "Code Signing",
      "Name Constraints",
      "Evil Corp",
    ])
      expect(asked).toContain(wanted);
    const issued = await svc.issueSvid({ csr, auth: admin });
    const leaf = join(dir, "greedy.pem");
    writeFileSync(leaf, issued.certPem);
    writeFileSync(join(dir, "int.pem"), svc.cas.activeIntermediate.pem);
    writeFileSync(join(dir, "root.pem"), svc.bundlePem());
    const text = execFileSync("openssl", ["x509", "-in", leaf, "-noout", "-text"], {
      encoding: "utf8",
    });
    expect(text).toMatch(/Subject: O ?= ?zt SVID\n/);
    expect(text).toMatch(/Basic Constraints: critical\n\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\n\s+Digital Signature\n/);
    expect(text).toMatch(
      /Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
    );
    expect(text).toMatch(
      /Subject Alternative Name: \n\s+URI:spiffe:\/\/example\.test\/ns\/greedy\n/,
    );
    for (const absent of [
      "Name Constraints",
      "Policies",
      "Code Signing",
      "OCSP",
      "Evil",
      "01:02:03:04:05",
    ])
      expect(text).not.toContain(absent);
    // SKI is the key's, AKI the intermediate's SKI (RFC 5280 §4.2.1.1-2).
    const ski = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(text)![1];
    const keyHash = createHash("sha1")
      .update(
        readDerChildren(
          readDerChildren(
            createPublicKey(issued.certPem).export({ format: "der", type: "spki" }),
          )[0]!.content,
        )[1]!.content.subarray(1),
      )
      .digest("hex")
      .toUpperCase()
      .replace(/(..)(?!$)/g, "$1:");
    expect(ski).toBe(keyHash);
    const intText = execFileSync(
      "openssl",
      ["x509", "-in", join(dir, "int.pem"), "-noout", "-text"],
      { encoding: "utf8" },
    );
    const intSki = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(intText)![1];
    expect(text).toMatch(new RegExp(`Authority Key Identifier: \\n\\s+(keyid:)?${intSki}`));
    expect(intText).toMatch(/CA:TRUE, pathlen:0/);
    // Serial: 128 random bits (at least 64 asked by CA/B BR §7.1), positive.
    expect(issued.serial).toMatch(/^[0-9a-f]{31,32}$/);
    // Inside the intermediate's validity; openssl accepts it for TLS both ways.
    expect(issued.notAfterMs).toBeLessThanOrEqual(svc.cas.activeIntermediate.notAfterMs);
    for (const purpose of ["sslclient", "sslserver"]) {
      const v = spawnSync(
        "openssl",
        [
          "verify",
          "-x509_strict",
          "-purpose",
          purpose,
          "-CAfile",
          join(dir, "root.pem"),
          "-untrusted",
          join(dir, "int.pem"),
          leaf,
        ],
        { encoding: "utf8" },
      );
      expect(v.status, v.stdout + v.stderr).toBe(0);
    }
  });

  it("refuses a second URI SAN, a foreign trust domain, DSA, Ed448 and RSA-PSS keys, and trailing bytes after the DER", async () => {
    const before = (await svc.listCerts({ all: true })).length;
    const refuse = async (csr: string | Buffer, code: string, reason: string) =>
      expect(svc.issueSvid({ csr, auth: admin })).rejects.toMatchObject({
        code,
        context: { reason },
      });
    await refuse(
      craft("two-uris", "/O=x", [
        "subjectAltName=URI:spiffe://example.test/ns/a,URI:spiffe://example.test/ns/b",
      ]),
      "ZT_PKI_SAN_NOT_ALLOWED",
      "san-multiple-uris",
    );
    await refuse(
      craft("foreign", "/O=x", ["subjectAltName=URI:spiffe://other.test/ns/a"]),
      "ZT_PKI_SAN_NOT_ALLOWED",
      "wrong-trust-domain",
    );
    await refuse(
      craft("email", "/O=x", [
        "subjectAltName=URI:spiffe://example.test/ns/a,email:a@example.test",
      ]),
      "ZT_PKI_CSR_INVALID",
      "san-type",
    );
    const params = join(dir, "dsa-params.pem");
    execFileSync(
      "openssl",
      [
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "dsa_paramgen_bits:2048",
        "-out",
        params,
      ],
      { stdio: "ignore" },
    );
    const san = ["subjectAltName=URI:spiffe://example.test/ns/a"];
    await refuse(
      craft("dsa", "/O=x", san, ["-paramfile", params]),
      "ZT_PKI_CSR_INVALID",
      "signature-algorithm",
    );
    await refuse(
      craft("ed448", "/O=x", san, ["-algorithm", "ED448"]),
      "ZT_PKI_CSR_INVALID",
      "signature-algorithm",
    );
    await refuse(
      craft("pss", "/O=x", san, ["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"]),
      "ZT_PKI_CSR_INVALID",
      "signature-algorithm",
    );
    const good = craft("trail", "/O=x", san);
    const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ""), "base64");
    await refuse(
      Buffer.concat([der, Buffer.from([0x05, 0x00])]),
      "ZT_PKI_CSR_INVALID",
      "der-malformed",
    );
    await refuse(
      pem(Buffer.concat([der, Buffer.from([0])]), "CERTIFICATE REQUEST"),
      "ZT_PKI_CSR_INVALID",
      "der-malformed",
    );
    expect((await svc.listCerts({ all: true })).length).toBe(before);
  });
});

describe("renewal credentials (checked, found refused)", () => {
  it("refuses renewal by an expired SVID and by one from another CA, issuing nothing", async () => {
    const id = "spiffe://example.test/ns/old";
    const first = await svc.issueSvidWithNewKey({ spiffeId: id, actor: "test", ttlMs: 120_000 });
    const certDer = Buffer.from(first.certPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const keyFile = join(dir, "old.key");
    writeFileSync(keyFile, first.keyPem, { mode: 0o600 });
    const csr = execFileSync(
      "openssl",
      ["req", "-new", "-key", keyFile, "-subj", "/O=x", "-addext", `subjectAltName=URI:${id}`],
      { encoding: "utf8" },
    );
    // A self-made "SVID" for the same key and ID, from a CA zt does not know.
    const foreign = join(dir, "foreign.pem");
    execFileSync("openssl", [
      "req",
      "-x509",
      "-key",
      keyFile,
      "-subj",
      "/O=x",
      "-days",
      "1",
      "-addext",
      `subjectAltName=URI:${id}`,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-out",
      foreign,
    ]);
    const foreignDer = Buffer.from(
      readFileSync(foreign, "utf8").replace(/-----[^-]+-----|\s/g, ""),
      "base64",
    );
    const before = (await svc.listCerts({ all: true })).length;
    await expect(
      svc.issueSvid({ csr, auth: { kind: "svid", certDer: foreignDer } }),
    ).rejects.toMatchObject({ code: "ZT_AUTH_FAILED", context: { reason: "cert-untrusted" } });
    env.clock.advance(121_000);
    try {
      await expect(svc.issueSvid({ csr, auth: { kind: "svid", certDer } })).rejects.toMatchObject({
        code: "ZT_AUTH_FAILED",
        context: { reason: "cert-expired" },
      });
    } finally {
      env.clock.advance(-121_000);
    }
    expect((await svc.listCerts({ all: true })).length).toBe(before);
    // Before it expired, the same request renews.
    expect((await svc.issueSvid({ csr, auth: { kind: "svid", certDer } })).spiffeId).toBe(id);
  });
});

describe("SSH certificate fields from user input (checked, found refused)", () => {
  it("refuses principals, force-command and source addresses that would split or widen what sshd reads", async () => {
    const key = join(dir, "fields");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const pub = readFileSync(`${key}.pub`, "utf8");
    const base = {
      publicKey: pub,
      user: "alice",
      hostGroup: "prod",
      principals: ["alice"],
      actor: "test",
    };
    const cases: [Record<string, unknown>, string][] = [
      [{ principals: [""] }, "principal-invalid"],
      [{ principals: ["alice\nroot"] }, "principal-invalid"],
      [{ principals: ["alice\0root"] }, "principal-invalid"],
      [{ principals: ["alice,root"] }, "principal-invalid"],
      [{ principals: ["*"] }, "principal-invalid"],
      [{ principals: ["alice root"] }, "principal-invalid"],
      [{ forceCommand: "true\nrm -rf /" }, "force-command-invalid"],
      [{ forceCommand: "" }, "force-command-invalid"],
      [{ sourceAddresses: ["10.0.0.0/8,0.0.0.0/0"] }, "source-address-invalid"],
      [{ sourceAddresses: ["10.0.0.0/33"] }, "source-address-invalid"],
      [{ hostGroup: "prod\nx" }, "host-group-invalid"],
    ];
    for (const [over, reason] of cases) {
      await expect(
        svc.ssh.signUser({ ...base, ...over } as Parameters<PkiService["ssh"]["signUser"]>[0]),
        JSON.stringify(over),
      ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST", context: { reason } });
    }
    for (const hostname of ["*", "*.com", "web?.example.test", "a,b", "a b"])
      await expect(
        svc.ssh.signHost({ publicKey: pub, hostnames: [hostname], actor: "test" }),
      ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST" });
  });

  it("signs RSA user keys with the Ed25519 CA (never ssh-rsa/SHA-1); ssh-keygen -L reads the fields as issued", async () => {
    const key = join(dir, "rsa-user");
    execFileSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", key]);
    const signed = await svc.ssh.signUser({
      publicKey: readFileSync(`${key}.pub`, "utf8"),
      user: "alice",
      hostGroup: "prod",
      principals: ["alice"],
      actor: "test",
      forceCommand: "/usr/bin/id",
      sourceAddresses: ["127.0.0.1/32"],
    });
    const file = join(dir, "rsa-user-cert.pub");
    writeFileSync(file, signed.certLine);
    const text = execFileSync("ssh-keygen", ["-L", "-f", file], { encoding: "utf8" });
    expect(text).toMatch(/Type: ssh-rsa-cert-v01@openssh.com user certificate/);
    expect(text).toMatch(/Signing CA: ED25519 SHA256:\S+ \(using ssh-ed25519\)/);
    expect(text).toMatch(/force-command \/usr\/bin\/id/);
    expect(text).toMatch(/source-address 127\.0\.0\.1\/32/);
    expect(text).toMatch(/Principals: \n\s+alice\n\s+Critical/);
    expect(text).toContain(`Serial: ${signed.serial}`);
  });
});

describe("the CRL (checked, found right)", () => {
  it("is signed by the intermediate, names it (AKI), lists the revoked serial with its reason, and its nextUpdate is pki.crl_ttl after its build", async () => {
    const gone = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/crl-check",
      actor: "test",
    });
    await svc.revoke({ serial: gone.serial, reason: "superseded", actor: "test" });
    const builtAt = env.clock.now();
    const crl = join(dir, "check.crl");
    writeFileSync(crl, await svc.crlDer());
    writeFileSync(join(dir, "int.pem"), svc.cas.activeIntermediate.pem);
    const v = spawnSync(
      "openssl",
      ["crl", "-inform", "DER", "-in", crl, "-noout", "-text", "-CAfile", join(dir, "int.pem")],
      { encoding: "utf8" },
    );
    expect(v.stderr).toMatch(/verify OK/);
    const text = v.stdout;
    expect(text).toMatch(new RegExp(`Serial Number: (00)?${gone.serial.toUpperCase()}\n`));
    expect(text).toMatch(/CRL Reason Code: \n\s+Superseded/);
    const intText = execFileSync(
      "openssl",
      ["x509", "-in", join(dir, "int.pem"), "-noout", "-ext", "subjectKeyIdentifier"],
      { encoding: "utf8" },
    );
    const intSki = /\n\s+([0-9A-F:]+)/.exec(intText)![1]!;
    expect(text).toContain(intSki);
    const at = (label: string) => Date.parse(new RegExp(`${label}: (.+)\\n`).exec(text)![1]!);
    expect(at("Last Update")).toBe(Math.floor((builtAt - 60_000) / 1000) * 1000);
    expect(at("Next Update")).toBe(Math.floor((builtAt + 24 * 3_600_000) / 1000) * 1000);
  });
});

describe("SSH public key input holding several keys", () => {
  it("stops `zt ssh revoke keys.pub` of a file with two keys from revoking the first alone (the second stayed valid, silently)", async () => {
    const keys = ["multi-a", "multi-b"].map((name) => {
      const key = join(dir, name);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key]);
      return { file: `${key}.pub`, pub: readFileSync(`${key}.pub`, "utf8") };
    });
    const both = keys[0]!.pub + keys[1]!.pub;
    // ssh-keygen reads such a file as two keys.
    const bothFile = join(dir, "multi-both.pub");
    writeFileSync(bothFile, both);
    const listed = execFileSync("ssh-keygen", ["-l", "-f", bothFile], { encoding: "utf8" });
    expect(listed.trim().split("\n")).toHaveLength(2);
    await expect(svc.ssh.revoke({ publicKey: both, actor: "test" })).rejects.toMatchObject({
      code: "ZT_PKI_KEY_INVALID",
      context: { reason: "ssh-key-multiple" },
    });
    await expect(
      svc.ssh.signHost({ publicKey: both, hostnames: ["m.example.test"], actor: "test" }),
    ).rejects.toMatchObject({
      code: "ZT_PKI_KEY_INVALID",
      context: { reason: "ssh-key-multiple" },
    });
    // Nothing half-done: neither key is in the KRL.
    const krl = join(dir, "multi.krl");
    writeFileSync(krl, await svc.ssh.krl());
    for (const k of keys) {
      const q = spawnSync("ssh-keygen", ["-Q", "-f", krl, k.file], { encoding: "utf8" });
      expect(q.stdout, k.file).toMatch(/ok$/m);
    }
    // One key with its trailing newline, or blank lines around it, is one key.
    expect(
      (
        await svc.ssh.signHost({
          publicKey: `\n${keys[0]!.pub}\n\n`,
          hostnames: ["m.example.test"],
          actor: "test",
        })
      ).serial,
    ).toMatch(/^\d+$/);
  });
});

describe("POST /api/v1/svid over a real socket: the refusals above", () => {
  it("answers each with its status and stable code, no stack trace, and issues nothing", async () => {
    const api = await createApiServer(env.ctx);
    await api.listen({ host: "127.0.0.1", port: 0 });
    try {
      const addr = api.server.address();
      const base = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
      const post = async (body: unknown, headers: Record<string, string> = {}) => {
        const res = await fetch(`${base}/api/v1/svid`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        });
        const text = await res.text();
        expect(text).not.toMatch(/\n\s+at |node_modules|\.ts:\d/);
        return {
          status: res.status,
          error: (JSON.parse(text) as { error: Record<string, unknown> }).error,
        };
      };
      const id = "spiffe://example.test/ns/api-review";
      await svc.addRegistration({ spiffeId: id }, "test");
      const { token } = await svc.createJoinToken(id, "test");
      const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
      const a = opensslCsr("api-a", `URI:${id}`, ec);
      const b = opensslCsr("api-b", `URI:${id}`, ec);
      const rsa = opensslCsr("api-rsa", `URI:${id}`, [
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
      ]);
      const before = (await svc.listCerts({ all: true })).length;
      expect(
        await post({ csr: a.pem + b.pem }, { authorization: `Bearer ${token}` }),
      ).toMatchObject({
        status: 400,
        error: { code: "ZT_PKI_CSR_INVALID", reason: "pem-multiple" },
      });
      expect(
        await post({ csr: forgeExponentOneCsr(rsa.pem) }, { authorization: `Bearer ${token}` }),
      ).toMatchObject({
        status: 400,
        error: { code: "ZT_PKI_KEY_INVALID", reason: "key-exponent" },
      });
      expect((await svc.listCerts({ all: true })).length).toBe(before);
      // The token was not spent on refusals: it issues now; then a replayed renewal is refused.
      const first = await post({ csr: a.pem }, { authorization: `Bearer ${token}` });
      expect(first.status).toBe(201);
      const issued = await svc.listCerts({ all: true });
      expect(issued.length).toBe(before + 1);
      const aKey = readFileSync(a.key, "utf8");
      const certPem = (await svc.issueSvid({ csr: a.pem, auth: { kind: "admin", actor: "test" } }))
        .certPem;
      const bDer = execFileSync("openssl", ["req", "-in", b.csr, "-outform", "DER"]);
      const proof = sign("sha256", renewProofInput(bDer), {
        key: aKey,
        dsaEncoding: "der",
      }).toString("base64");
      const renew = { csr: b.pem, renew: { cert: certPem, proof } };
      expect((await post(renew)).status).toBe(201);
      expect(await post(renew)).toMatchObject({
        status: 401,
        error: { code: "ZT_AUTH_FAILED", reason: "renew-proof-replayed" },
      });
    } finally {
      await api.close();
    }
  });
});

describe(
  "zt ssh revoke / host-sign with a key file of several keys (the real CLI)",
  { timeout: 180_000 },
  () => {
    it("exits 65 with ZT_PKI_KEY_INVALID naming why, no stack trace, and revokes nothing", async () => {
      const cliDir = tempDir("zt-pki-input-cli-");
      try {
        const config = writeConfig(cliDir, "data_dir: ./data\ntrust_domain: example.test\n", {});
        const cliEnv = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };
        const zt = (args: string[]) => runZt(["--config", config, ...args], { env: cliEnv });
        expect((await zt(["ca", "init"])).code).toBe(0);
        const files = ["cli-a", "cli-b"].map((name) => {
          const key = join(cliDir, name);
          execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
          return readFileSync(`${key}.pub`, "utf8");
        });
        const both = join(cliDir, "authorized_keys");
        writeFileSync(both, files.join(""));
        for (const args of [
          ["ssh", "revoke", both],
          ["ssh", "host-sign", "--key", both, "--hostname", "h.example.test"],
        ]) {
          const r = await zt(args);
          expect(r.code, r.stderr).toBe(65);
          expect(r.stderr).toMatch(
            /^zt: error ZT_PKI_KEY_INVALID: expected one public key line, got 2 lines/,
          );
          expect(r.stderr).not.toMatch(/\n\s+at /);
        }
        expect((await zt(["ssh", "krl", "--out", join(cliDir, "krl")])).code).toBe(0);
        const q = spawnSync("ssh-keygen", ["-Q", "-f", join(cliDir, "krl"), both], {
          encoding: "utf8",
        });
        // Neither key is listed (ssh-keygen -Q exits non-zero and says REVOKED for one that is).
        expect(q.status, q.stdout + q.stderr).toBe(0);
        expect(q.stdout).not.toContain("REVOKED");
      } finally {
        rmSync(cliDir, { recursive: true, force: true });
      }
    });
  },
);

describe("zt ssh revoke --reason", () => {
  it("stops a reason of any length or with control characters from being stored, published and audited whole", async () => {
    const key = join(dir, "reason");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const pub = readFileSync(`${key}.pub`, "utf8");
    const signed = await svc.ssh.signHost({
      publicKey: pub,
      hostnames: ["r.example.test"],
      actor: "test",
    });
    for (const reason of ["x".repeat(100_000), "\u001b]0;owned\u0007", "a\nb", "\u202eevil", ""]) {
      await expect(
        svc.ssh.revoke({ serial: signed.serial, reason, actor: "test" }),
        JSON.stringify(reason.slice(0, 20)),
      ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST", context: { reason: "reason-invalid" } });
    }
    const row = await env.ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select(["revoked_at", "revoke_reason"])
      .where("serial", "=", signed.serial)
      .executeTakeFirstOrThrow();
    expect(row.revoked_at).toBeNull();
    // A reason in words is kept as given.
    await svc.ssh.revoke({
      serial: signed.serial,
      reason: "laptop lost (ticket #42)",
      actor: "test",
    });
    const after = await env.ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select("revoke_reason")
      .where("serial", "=", signed.serial)
      .executeTakeFirstOrThrow();
    expect(after.revoke_reason).toBe("laptop lost (ticket #42)");
  });
});
