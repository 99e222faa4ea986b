import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

interface QrcodeTerminal {
  generate(text: string, options: { small?: boolean }, callback: (qr: string) => void): void;
}

/** Renders text as a QR code made of terminal block characters (synchronous). */
export function renderTerminalQr(text: string): string {
  const qrcode = require("qrcode-terminal") as QrcodeTerminal;
  let out = "";
  qrcode.generate(text, { small: true }, (qr) => {
    out = qr;
  });
  return out;
}

export interface TotpEnrolmentPrintOptions {
  name: string;
  totpUri: string;
  totpSecret: string;
  backupCodes?: string[];
  /** A generated password, printed once. */
  password?: string;
  /** Where lines go (default: stdout). */
  write?: (text: string) => void;
  /** Skip the QR code (e.g. not a terminal). */
  qr?: boolean;
}

/**
 * Prints what a new user needs to enrol an authenticator: the otpauth:// URI, the
 * secret (for `oathtool --totp -b SECRET` or manual entry), a QR code, and the backup
 * codes. Everything here is shown once and never logged.
 */
export function printTotpEnrolment(options: TotpEnrolmentPrintOptions): void {
  const write = options.write ?? ((t: string) => void process.stdout.write(t));
  const lines: string[] = [];
  lines.push(`User:          ${options.name}`);
  if (options.password !== undefined)
    lines.push(`Password:      ${options.password}   (generated; shown once)`);
  lines.push(`TOTP secret:   ${options.totpSecret}`);
  lines.push(`TOTP URI:      ${options.totpUri}`);
  lines.push(`               (or: oathtool --totp -b ${options.totpSecret})`);
  if (options.qr !== false) {
    lines.push("", "Scan with your authenticator app:", renderTerminalQr(options.totpUri));
  }
  if (options.backupCodes && options.backupCodes.length > 0) {
    lines.push("Backup codes (each works once; store them safely, they are not shown again):");
    for (let i = 0; i < options.backupCodes.length; i += 2) {
      lines.push(`  ${options.backupCodes.slice(i, i + 2).join("   ")}`);
    }
  }
  write(lines.join("\n") + "\n");
}
