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
