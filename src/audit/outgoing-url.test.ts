import { describe, expect, it } from "vitest";
import { isZtError } from "../core/errors.js";
import { parseAuditConfig } from "./audit-config.js";
import { parseAlertsConfig } from "./alerts/alerts-config.js";
import { parseNotificationsConfig } from "../access/access-config.js";

/**
 * Outgoing URLs with `user:password@`: fetch refuses them and its error quotes the URL
 * whole, so every delivery would fail and the error of each (printed, audited) would carry
 * the password. Refused when the config is read, naming the key, never echoing the URL.
 */
const SECRET = "s3cret-pw";
const cases: [string, () => unknown][] = [
  [
    "alerts.webhook",
    () => parseAlertsConfig({ webhook: `https://ops:${SECRET}@hooks.example.test/zt` }),
  ],
  [
    "audit.sinks.0.url (webhook)",
    () =>
      parseAuditConfig(
        { sinks: [{ type: "webhook", url: `https://ops:${SECRET}@siem.example.test/in` }] },
        "example.test",
      ),
  ],
  [
    "audit.sinks.0.url (loki)",
    () =>
      parseAuditConfig(
        { sinks: [{ type: "loki", url: `http://ops:${SECRET}@127.0.0.1:3100/loki/api/v1/push` }] },
        "example.test",
      ),
  ],
  [
    "notifications.webhook",
    () => parseNotificationsConfig({ webhook: `https://ops:${SECRET}@hooks.example.test/` }),
  ],
];

function refusal(parse: () => unknown): Error {
  try {
    parse();
  } catch (e) {
    expect(isZtError(e) && e.code).toBe("ZT_CONFIG_INVALID");
    return e as Error;
  }
  throw new Error("config was accepted");
}

describe("an outgoing URL with credentials", () => {
  it.each(cases)("is refused: %s", (key, parse) => {
    const e = refusal(parse);
    expect(e.message).toContain(key.split(" ")[0]!.replace(/\.0\./, ".0."));
    expect(e.message).toMatch(/without credentials/);
    expect(e.message).not.toContain(SECRET);
  });

  it("is taken without them (user name only is refused too)", () => {
    expect(() =>
      parseAlertsConfig({ webhook: "https://hooks.example.test/zt?token=t" }),
    ).not.toThrow();
    expect(
      refusal(() => parseAlertsConfig({ webhook: "https://ops@hooks.example.test/" })).message,
    ).toMatch(/without credentials/);
    expect(() =>
      parseAuditConfig(
        { sinks: [{ type: "loki", url: "http://127.0.0.1:3100/loki/api/v1/push" }] },
        "example.test",
      ),
    ).not.toThrow();
  });
});
