import { parseAccessConfig, parseNotificationsConfig } from "../access/index.js";
import { parseAlertsConfig, parseAuditConfig } from "../audit/index.js";
import type { ZtConfig } from "../config/index.js";
import { parseDevicesConfig } from "../device/index.js";
import { identitySettings } from "../identity/index.js";
import { parsePkiSettings } from "../pki/index.js";

/**
 * Validates the sections of zt.yaml that the capabilities read themselves (`pki`,
 * `audit`, `alerts`, `access`, `notifications`, `devices`, `mfa`) with each capability's
 * own parser: the same check at start and at a SIGHUP reload, so a reload cannot accept
 * a value the next start would refuse. Throws ZT_CONFIG_INVALID naming the key.
 *
 * @example
 * const next = loadConfig(path);
 * validateCapabilityConfig(next); // throws before anything is applied
 */
export function validateCapabilityConfig(config: ZtConfig): void {
  parsePkiSettings(config.pki, config.trust_domain);
  parseAuditConfig(config.audit, config.trust_domain);
  parseAlertsConfig(config.alerts);
  parseAccessConfig(config.access);
  parseNotificationsConfig(config.notifications);
  parseDevicesConfig(config.devices);
  identitySettings(config);
}
