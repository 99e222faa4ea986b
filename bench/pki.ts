/**
 * bench:pki — X.509-SVIDs issued per second from CSRs on one core, against the raw
 * limit measured in the same run: `crypto.sign` ECDSA P-256 signatures per second.
 * Issuing verifies the CSR's self-signature (one ECDSA verify) and signs the SVID
 * (one ECDSA sign), so the run also reports sign+verify pairs per second: the
 * cryptographic ceiling for honest issuance.
 */
import { createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { cpus } from "node:os";
import { webcrypto } from "node:crypto";
import { x509 } from "../src/pki/x509-lib.js";
import { pkiService, initPki } from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import { parseCsr } from "../src/pki/csr.js";
import { buildSvid, randomSerialHex } from "../src/pki/x509-build.js";
import { buildSvidFast } from "../src/pki/svid-der.js";

const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 3);

function rate(label: string, fn: () => void, seconds = SECONDS): number {
  for (let i = 0; i < 200; i++) fn(); // warm up
  const end = performance.now() + seconds * 1000;
  let n = 0;
  const start = performance.now();
  while (performance.now() < end) {
    fn();
    n++;
  }
  const r = n / ((performance.now() - start) / 1000);
  console.log(`${label.padEnd(46)} ${r.toFixed(0).padStart(8)} /s`);
  return r;
}

async function rateAsync(
  label: string,
  fn: (i: number) => Promise<void>,
  seconds = SECONDS,
): Promise<number> {
  for (let i = 0; i < 50; i++) await fn(i);
  const end = performance.now() + seconds * 1000;
  let n = 0;
  const start = performance.now();
  while (performance.now() < end) {
    await fn(n);
    n++;
  }
  const r = n / ((performance.now() - start) / 1000);
  console.log(`${label.padEnd(46)} ${r.toFixed(0).padStart(8)} /s`);
  return r;
}

async function concurrentRate(
  label: string,
  inFlight: number,
  fn: (i: number) => Promise<void>,
  seconds = SECONDS,
): Promise<number> {
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) await fn(n++);
    }),
  );
  const r = n / ((performance.now() - start) / 1000);
  console.log(`${label.padEnd(46)} ${r.toFixed(0).padStart(8)} /s`);
  return r;
}

async function main(): Promise<void> {
  console.log(
    `bench:pki — ${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} CPUs, node ${process.version}`,
  );
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const tbs = Buffer.alloc(400, 7);
  const sig = sign("sha256", tbs, privateKey);
  const rawSign = rate("raw crypto.sign ECDSA P-256", () => void sign("sha256", tbs, privateKey));
  const rawVerify = rate(
    "raw crypto.verify ECDSA P-256",
    () => void verify("sha256", tbs, publicKey, sig),
  );
  const rawPair = rate("raw sign + verify (issuance crypto floor)", () => {
    verify("sha256", tbs, publicKey, sig);
    sign("sha256", tbs, privateKey);
  });

  // The floor for honest issuance: import the requester's key, verify its CSR signature, sign.
  const pubs = Array.from({ length: 256 }, () => {
    const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      format: "jwk",
    });
    return { kty: "EC", crv: "P-256", x: String(jwk.x), y: String(jwk.y) };
  });
  let k = 0;
  const floor = rate("raw floor: import key + verify + sign", () => {
    const key = createPublicKey({ key: pubs[k++ % pubs.length]!, format: "jwk" });
    verify("sha256", tbs, key, sig);
    sign("sha256", tbs, privateKey);
  });

  // 256 distinct workload keys and CSRs, as workloads would send them.
  const csrs: string[] = [];
  for (let i = 0; i < 256; i++) {
    const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "O=bench",
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: `spiffe://bench.test/w/${i}` },
        ]),
      ],
    });
    csrs.push(csr.toString("pem"));
  }

  const env = await openPkiTestContext({ trustDomain: "bench.test" });
  try {
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const issuer = svc.cas.activeIntermediate;
    const now = Date.now();
    const tpl = (i: number) => {
      const csr = parseCsr(csrs[i % csrs.length]!);
      return {
        serial: randomSerialHex(),
        spiffeId: csr.uris[0]!,
        dnsNames: [],
        ips: [],
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
        spki: csr.spki,
      };
    };
    const reference = await rateAsync(
      "reference: CSR + SVID via @peculiar/x509",
      async (i) => {
        await buildSvid(issuer, tpl(i));
      },
      1,
    );
    const build = await rateAsync("CSR parse+verify + SVID build+sign (no store)", async (i) => {
      const csr = parseCsr(csrs[i % csrs.length]!);
      buildSvidFast(issuer.fast, {
        serial: randomSerialHex(),
        spiffeId: csr.uris[0]!,
        dnsNames: [],
        ips: [],
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
        spki: csr.spki,
      });
    });
    const issuedSeq = await rateAsync("issueSvid from CSR, one at a time (stored)", async (i) => {
      await svc.issueSvid({ csr: csrs[i % csrs.length]!, auth: { kind: "admin", actor: "bench" } });
    });
    const issued = await concurrentRate(
      "issueSvid from CSR, 64 in flight (stored)",
      64,
      async (i) => {
        await svc.issueSvid({
          csr: csrs[i % csrs.length]!,
          auth: { kind: "admin", actor: "bench" },
        });
      },
    );
    await env.ctx.audit.flush();

    // GET /pki/ssh/krl is public: served from memory, against the baseline of building it
    // from the store on every request (what the endpoint did before the cache), in the same
    // run. 200 revoked keys, so the list and its queries are not empty.
    for (let i = 0; i < 200; i++) {
      const raw = generateKeyPairSync("ed25519")
        .publicKey.export({ format: "der", type: "spki" })
        .subarray(-32);
      const name = Buffer.from("ssh-ed25519");
      const blob = Buffer.concat([
        Buffer.from([0, 0, 0, name.length]),
        name,
        Buffer.from([0, 0, 0, 32]),
        raw,
      ]);
      await svc.ssh.revoke({ publicKey: `ssh-ed25519 ${blob.toString("base64")}`, actor: "bench" });
    }
    const krlBuilt = await rateAsync("KRL built from the store for each request", async () => {
      svc.ssh.invalidateKrl();
      await svc.ssh.krl();
    });
    const krlServed = await rateAsync(
      "KRL served (cached, rebuilt after revocations)",
      async () => {
        await svc.ssh.krl();
      },
    );
    // The same baseline again: other work on a shared machine shows up as drift, and a
    // ratio is only trusted when both ends of the run agree.
    const rawSignAfter = rate(
      "raw crypto.sign ECDSA P-256, again (drift)",
      () => void sign("sha256", tbs, privateKey),
    );
    console.log("");
    console.log(
      `raw sign/s at the end ÷ at the start              = ${(rawSignAfter / rawSign).toFixed(3)} (≈ 1 on a quiet core)`,
    );
    console.log(
      `SVIDs/s from CSRs ÷ raw ECDSA P-256 signs/s      = ${(issued / rawSign).toFixed(3)} (target ≥ 0.5)`,
    );
    console.log(
      `SVIDs/s from CSRs ÷ raw floor (import+verify+sign) = ${(issued / floor).toFixed(3)}`,
    );
    console.log(
      `one-at-a-time SVIDs/s ÷ raw ECDSA P-256 signs/s  = ${(issuedSeq / rawSign).toFixed(3)}`,
    );
    console.log(
      `SVIDs/s from CSRs ÷ raw sign+verify pairs/s       = ${(issued / rawPair).toFixed(3)}`,
    );
    console.log(
      `no-store SVIDs/s ÷ raw ECDSA P-256 signs/s        = ${(build / rawSign).toFixed(3)}`,
    );
    console.log(
      `stored (64 in flight) ÷ no-store SVIDs/s          = ${(issued / build).toFixed(3)}`,
    );
    console.log(
      `raw verify/s ÷ raw sign/s                         = ${(rawVerify / rawSign).toFixed(3)}`,
    );
    console.log(
      `hand-written path ÷ @peculiar/x509 path           = ${(build / reference).toFixed(1)}×`,
    );
    console.log(
      `KRL served ÷ KRL built per request                = ${(krlServed / krlBuilt).toFixed(0)}×`,
    );
  } finally {
    await env.cleanup();
  }
}

await main();
