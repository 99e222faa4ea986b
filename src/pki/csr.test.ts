import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { webcrypto } from "node:crypto";
import { parseCsr } from "./csr.js";
import { x509 } from "./x509-lib.js";

/** The reference: what @peculiar/x509 reads from the same CSR. */
function referenceParse(der: Buffer) {
  const csr = new x509.Pkcs10CertificateRequest(der);
  const ext = csr.getExtension("2.5.29.17");
  const san = ext ? new x509.SubjectAlternativeNameExtension(ext.rawData) : null;
  const items = san?.names.items ?? [];
  return {
    spki: Buffer.from(csr.publicKey.rawData).toString("hex"),
    uris: items.filter((n) => n.type === "url").map((n) => n.value),
    dnsNames: items.filter((n) => n.type === "dns").map((n) => n.value),
    ips: items.filter((n) => n.type === "ip").map((n) => n.value),
  };
}

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?$/);
const name = fc.oneof(
  fc.record({
    type: fc.constant("url" as const),
    value: fc.stringMatching(/^spiffe:\/\/[a-z]{1,8}\.test(\/[A-Za-z0-9._-]{1,8}){0,3}$/),
  }),
  fc.record({
    type: fc.constant("dns" as const),
    value: fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join(".")),
  }),
  fc.record({
    type: fc.constant("ip" as const),
    value: fc.oneof(
      fc.ipV4(),
      fc.ipV6().filter((s) => !s.includes(".")),
    ),
  }),
);

describe("parseCsr (hand-written DER reading) agrees with @peculiar/x509", () => {
  it("same key and SANs for random CSRs; self-signature checked", async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    await fc.assert(
      fc.asyncProperty(fc.array(name, { maxLength: 5 }), fc.boolean(), async (names, withExt) => {
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: "CN=test,O=zt",
          keys,
          signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
          extensions:
            withExt || names.length > 0
              ? [
                  new x509.SubjectAlternativeNameExtension(names),
                  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
                ]
              : [],
        });
        const der = Buffer.from(csr.rawData);
        const ours = parseCsr(der);
        const ref = referenceParse(der);
        expect(ours.spki.toString("hex")).toBe(ref.spki);
        expect(ours.uris).toEqual(ref.uris);
        expect(ours.dnsNames).toEqual(ref.dnsNames);
        // IPv6 text forms may differ; compare as bytes via URL normalisation.
        const norm = (ip: string) => (ip.includes(":") ? new URL(`http://[${ip}]/`).hostname : ip);
        expect(ours.ips.map(norm)).toEqual(ref.ips.map(norm));
      }),
      { numRuns: 100 },
    );
  });

  it("refuses a CSR whose signature was made by another key", async () => {
    const a = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const b = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=x",
      keys: { publicKey: a.publicKey, privateKey: b.privateKey },
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    });
    expect(() => parseCsr(Buffer.from(csr.rawData))).toThrow(
      expect.objectContaining({ code: "ZT_PKI_CSR_INVALID" }),
    );
  });

  it("refuses truncated and garbage DER without throwing anything but ZtError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          parseCsr(Buffer.from(bytes));
        } catch (e) {
          expect((e as { code?: string }).code).toMatch(/^ZT_/);
        }
      }),
      { numRuns: 300 },
    );
  });
});
