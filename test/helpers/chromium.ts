import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

/**
 * Debian's headless Chromium (/usr/bin/chromium) through playwright-core, with every
 * `*.localhost` name resolving to 127.0.0.1 (zt's routes are told apart by Host).
 */
export async function launchChromium(): Promise<Browser> {
  const executablePath = "/usr/bin/chromium";
  if (!existsSync(executablePath))
    throw new Error("Debian chromium is not installed (apt-get install chromium)");
  return chromium.launch({
    executablePath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--host-resolver-rules=MAP *.localhost 127.0.0.1",
    ],
  });
}
