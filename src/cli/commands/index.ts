import type { Command } from "commander";
import { registerUpCommands } from "./up.js";
import { registerInitCommands } from "./init.js";
import { registerSessionCommands } from "./session.js";
import { registerUserCommands } from "./user.js";
import { registerDbCommands } from "./db.js";
import { registerAuditCommands } from "./audit.js";
import { registerAlertsCommands } from "./alerts.js";
import { registerBanCommands } from "./ban.js";
import { registerSegCommands } from "./seg.js";
import { registerDeviceCommands } from "./device.js";
import { registerAccessCommands } from "./access.js";
import { registerBreakglassCommands } from "./breakglass.js";
import { registerPolicyCommands } from "./policy.js";
import { registerCaCommands } from "./ca.js";
import { registerCertCommands } from "./cert.js";
import { registerSshCommands } from "./ssh.js";
import { registerForwardAuthCommands } from "./forward-auth.js";
import { registerKeysCommands } from "./keys.js";

/**
 * Every command group. Each capability's CLI lives in its own file here and exports a
 * `register…Commands(program)` function; add one import and one call per group.
 */
export function registerAllCommands(program: Command): void {
  registerInitCommands(program);
  registerUpCommands(program);
  registerPolicyCommands(program);
  registerSessionCommands(program);
  registerUserCommands(program);
  registerDbCommands(program);
  registerAuditCommands(program);
  registerAlertsCommands(program);
  registerBanCommands(program);
  registerSegCommands(program);
  registerDeviceCommands(program);
  registerAccessCommands(program);
  registerBreakglassCommands(program);
  registerCaCommands(program);
  registerCertCommands(program);
  registerSshCommands(program);
  registerForwardAuthCommands(program);
  registerKeysCommands(program);
}
