import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createPrivateKey, generateKeyPairSync, webcrypto, X509Certificate } from "node:crypto";
import { BlockList } from "node:net";
import { readDerChildren } from "./der.js";
import { buildSvidFast, svidTbs, type FastIssuer } from "./svid-der.js";
import {
  buildRootCert,
  buildSvid,
  keyIdentifier,
  randomSerialHex,
  type SigningCa,
} from "./x509-build.js";
import { x509 } from "./x509-lib.js";

async function makeIssuer(): Promise<{ ref: SigningCa; fast: FastIssuer }> {
  const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const spki = Buffer.from(await webcrypto.subtle.exportKey("spki", keys.publicKey));
  const cert = await buildRootCert(
    {
      subject: "CN=test CA,OU=example.test,O=zt",
      serial: randomSerialHex(),
      notBefore: new Date(0),
      notAfter: new Date(Date.UTC(2090, 0, 1)),
      spki,
    },
    keys,
  );
  const der = Buffer.from(cert.rawData);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyId = keyIdentifier(spki);
  const tbs = readDerChildren(readDerChildren(der)[0]!.content)[0]!;
  const subjectDer = readDerChildren(tbs.content)[5]!.whole;
  return {
    ref: {
      id: "t",
      cert,
      der,
      signingKey: keys.privateKey,
      keyId,
      notAfterMs: cert.notAfter.getTime(),
    },
    fast: {
      subjectDer,
      keyId,
      privateKey: createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }),
    },
  };
}

const tbsOf = (der: Buffer) => readDerChildren(readDerChildren(der)[0]!.content)[0]!.whole;

const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/).filter((s) => s !== "." && s !== "..");
const dnsLabel = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
const ipv4 = fc.ipV4();
const ipv6 = fc.ipV6().filter((s) => !s.includes("."));

describe("hand-written SVID DER equals @peculiar/x509's (RFC 5280 TBSCertificate)", () => {
  it("byte-identical TBSCertificate for random SVIDs; the fast certificate verifies under the issuer", async () => {
    const { ref, fast } = await makeIssuer();
    const spkis = [0, 1, 2].map(() =>
      generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 4 }),
        fc.array(fc.array(dnsLabel, { minLength: 2, maxLength: 3 }), { maxLength: 3 }),
        fc.array(fc.oneof(ipv4, ipv6), { maxLength: 2 }),
        fc.integer({ min: Date.UTC(2000, 0, 1) / 1000, max: Date.UTC(2080, 0, 1) / 1000 }),
        fc.integer({ min: 60, max: 86_400 }),
        fc.integer({ min: 0, max: 2 }),
        async (segs, dns, ips, startS, lifeS, k) => {
          const input = {
            serial: randomSerialHex(),
            spiffeId: `spiffe://example.test/${segs.join("/")}`,
            dnsNames: dns.map((l) => l.join(".")),
            ips,
            notBefore: new Date(startS * 1000),
            notAfter: new Date((startS + lifeS) * 1000),
            spki: spkis[k]!,
          };
          const reference = await buildSvid(ref, input);
          expect(svidTbs(fast, input).equals(tbsOf(reference))).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
    const der = buildSvidFast(fast, {
      serial: "8f" + "00".repeat(15),
      spiffeId: "spiffe://example.test/x",
      dnsNames: [],
      ips: ["::1"],
      notBefore: new Date(),
      notAfter: new Date(Date.now() + 3_600_000),
      spki: spkis[0]!,
    });
    const cert = new X509Certificate(der);
    expect(cert.verify(new X509Certificate(ref.der).publicKey)).toBe(true);
    expect(cert.serialNumber.toLowerCase()).toBe("8f" + "00".repeat(15));
    expect(new x509.X509Certificate(der).subject).toBe("O=zt SVID");
  });
});

describe("IP SANs in the hand-written SVID", () => {
  it("stops an IPv6 SAN with an embedded IPv4 part from being signed as another address: the certificate's IP, as X509Certificate reads it back, is the requested one (differential against libuv's parser)", async () => {
    const { fast } = await makeIssuer();
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      format: "der",
      type: "spki",
    });
    const template = (ip: string) => ({
      serial: randomSerialHex(),
      spiffeId: "spiffe://example.test/ip",
      dnsNames: [],
      ips: [ip],
      notBefore: new Date(Date.UTC(2030, 0, 1)),
      notAfter: new Date(Date.UTC(2030, 0, 2)),
      spki,
    });
    const examples = ["::ffff:10.0.0.1", "::1.2.3.4", "64:ff9b::192.0.2.33"];
    // fc.ipV6() includes the dotted forms (`::ffff:1.2.3.4`, `1:2:3:4:5:6:7.8.9.10`).
    fc.assert(
      fc.property(fc.oneof(fc.constantFrom(...examples), fc.ipV6()), (ip) => {
        const san = new X509Certificate(buildSvidFast(fast, template(ip))).subjectAltName ?? "";
        const printed = /IP Address:([0-9A-Fa-f:.]+)/.exec(san)?.[1];
        expect(printed, `${ip} -> ${san}`).toBeDefined();
        const list = new BlockList();
        list.addAddress(ip, "ipv6");
        expect(list.check(printed!, "ipv6"), `${ip} was signed as ${printed}`).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
