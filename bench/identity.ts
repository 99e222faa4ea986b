/**
 * Identity benchmark: the cost of a TOTP check (zt's verifyTotp, which computes all
 * three steps of the ±1 window in constant time and applies replay rules) against the
 * baseline otpauth `TOTP.validate`, and of a password check against a raw
 * `crypto.scrypt` call with the same parameters. Prints ops/s and the ratio.
 *
 * Run: npm run build && node dist/bench/identity.js
 */
import { scrypt } from "node:crypto";
import { cpus } from "node:os";
import { Secret, TOTP } from "otpauth";
import { hashPassword, totpCodeAt, verifyPassword, verifyTotp } from "../src/identity/index.js";

function opsPerSec(fn: () => void, ms = 1500): number {
  for (let i = 0; i < 200; i++) fn();
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < ms) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
  }
  return (n * 1000) / (performance.now() - start);
}

async function timeAsync(fn: () => Promise<unknown>, runs: number): Promise<number> {
  await fn();
  const start = performance.now();
  for (let i = 0; i < runs; i++) await fn();
  return (performance.now() - start) / runs;
}

const secret = new Secret({ size: 20 }).base32;
const now = Date.UTC(2026, 0, 1);
const code = totpCodeAt(secret, now);
const s = Secret.fromBase32(secret);

const zt = opsPerSec(() => verifyTotp({ secret, code, nowMs: now, lastAcceptedStep: 0 }));
const base = opsPerSec(() => TOTP.validate({ token: code, secret: s, timestamp: now, window: 1 }));

const hash = await hashPassword("correct horse battery staple");
const ztPw = await timeAsync(() => verifyPassword("correct horse battery staple", hash), 10);
const rawPw = await timeAsync(
  () =>
    new Promise((res, rej) =>
      scrypt(
        "correct horse battery staple",
        "0123456789abcdef",
        32,
        { N: 2 ** 15, r: 8, p: 3, maxmem: 2 ** 26 },
        (e, k) => (e ? rej(e) : res(k)),
      ),
    ),
  10,
);

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}; node ${process.version}`);
console.log(`verifyTotp (zt, 3 steps constant-time)  ${zt.toFixed(0)} ops/s`);
console.log(`TOTP.validate (otpauth baseline)        ${base.toFixed(0)} ops/s`);
console.log(`ratio zt/baseline                        ${(zt / base).toFixed(2)}`);
console.log(`verifyPassword (zt)                      ${ztPw.toFixed(1)} ms`);
console.log(`crypto.scrypt N=2^15 r=8 p=3 (baseline)  ${rawPw.toFixed(1)} ms`);
console.log(`ratio zt/baseline                        ${(ztPw / rawPw).toFixed(2)}`);
