import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCsr } from "./csr.js";
import { buildRenewalRequest } from "./renewal.js";
import { opensslRequest } from "../../test/helpers/tls.js";

let dir: string;
let chainPem: string;
let keyPem: string;

beforeAll(() => {
  // A certificate made by OpenSSL, not by zt: its names are whatever a CA once put there.
  dir = mkdtempSync(join(tmpdir(), "zt-renewal-"));
  chainPem = opensslRequest({
    keyOut: join(dir, "key.pem"),
    out: join(dir, "cert.pem"),
    subj: "/O=zt SVID",
    san: "URI:spiffe://example.test/web,DNS:999.1.1.1,DNS:web.example.test,IP:10.0.0.7,IP:2001:db8::7",
  });
  keyPem = readFileSync(join(dir, "key.pem"), "utf8");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("zt cert renew: the CSR for the new key", () => {
  it("keeps each name's SAN type from the certificate: a DNS name of digits and dots is not an IP address (renewal died with ZT_INTERNAL 'Invalid IPv4 address part')", async () => {
    const req = await buildRenewalRequest(chainPem, keyPem);
    const csr = parseCsr(req.csrPem);
    expect(csr.uris).toEqual(["spiffe://example.test/web"]);
    expect(csr.dnsNames).toEqual(["999.1.1.1", "web.example.test"]);
    expect(csr.ips).toHaveLength(2);
    expect(csr.ips[0]).toBe("10.0.0.7");
    expect(csr.ips[1]?.toLowerCase()).toMatch(/^2001:db8:(0*:)*7$|^2001:db8::7$/);
  });
});
