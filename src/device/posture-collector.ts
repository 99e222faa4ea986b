import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { PostureChecks } from "./posture-score.js";

export interface CollectedPosture {
  os: string;
  checks: PostureChecks;
  /** Per check, what was run and seen (for the operator; never secrets). */
  evidence: Record<string, string>;
}

/** What a command gave: `ok` (exit 0), its exit code (-1: not run / killed), stdout. */
export interface CommandResult {
  ok: boolean;
  code: number;
  out: string;
}

/** Runs a command (the collector's only way to ask the system; injectable for tests). */
export type CommandRunner = (cmd: string, args: string[]) => Promise<CommandResult>;

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024, env: { ...process.env, LC_ALL: "C" } },
      (err, stdout) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === "number"
            ? (err as { code: number }).code
            : -1
          : 0;
        resolve({ ok: !err, code, out: String(stdout) });
      },
    );
  });
}

type Check = [boolean | null, string];

async function osVersion(): Promise<string> {
  try {
    const text = await readFile("/etc/os-release", "utf8");
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text);
    // The report's os is at most 200 characters without control characters (a CRLF file).
    // eslint-disable-next-line no-control-regex -- dropping control characters is the point
    return m?.[1]?.replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 200) || "linux";
  } catch {
    return "linux";
  }
}

/**
 * Pending security updates via a simulated apt upgrade (no changes made). Only a run
 * that exited 0 and printed apt's summary line counts: a failed or unreadable run (no
 * lists, a broken source, no apt) is unknown, never "0 pending".
 */
async function osUpdates(run: CommandRunner): Promise<Check> {
  const r = await run("apt-get", ["-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]);
  if (r.code === -1 && !r.out) return [null, "apt-get not available"];
  if (!r.ok) return [null, `apt-get -s dist-upgrade failed (exit ${r.code})`];
  if (!/^\d+ upgraded, \d+ newly installed, \d+ to remove and \d+ not upgraded\.$/m.test(r.out))
    return [null, "apt-get -s dist-upgrade: no summary line in its answer"];
  const pending = r.out
    .split("\n")
    .filter((l) => l.startsWith("Inst ") && /-security/i.test(l)).length;
  return [pending === 0, `${pending} pending security update(s)`];
}

/**
 * Whether the root filesystem itself sits on dm-crypt: the block device backing `/`
 * (findmnt) and every device under it (`lsblk -s`, e.g. lvm → crypt → part → disk)
 * must include a `crypt` layer. Another mapped crypt device (a USB stick) does not
 * count. Anything that cannot be read, or a root that is not a block device (overlay,
 * ZFS, tmpfs), is unknown.
 */
async function diskEncryption(run: CommandRunner): Promise<Check> {
  const m = await run("findmnt", ["-n", "-v", "-o", "SOURCE", "/"]);
  // Strip a `[/subvolume]` suffix in case -v was not honoured.
  const source =
    m.out
      .trim()
      .split("\n")[0]
      ?.replace(/\[.*\]$/, "") ?? "";
  if (!m.ok || !source) return [null, "findmnt could not tell what backs /"];
  if (!source.startsWith("/dev/")) return [null, `/ is on ${source}, not a block device`];
  const r = await run("lsblk", ["-n", "-s", "-o", "TYPE", source]);
  const types = r.out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  if (!r.ok || types.length === 0) return [null, `lsblk -s ${source} failed`];
  const crypt = types.includes("crypt");
  return [
    crypt,
    crypt
      ? `/ (${source}) is on dm-crypt (${types.join(" < ")})`
      : `/ (${source}) has no crypt layer (${types.join(" < ")})`,
  ];
}

/**
 * An active firewall, read from the ruleset itself: `ufw status` saying active, or an
 * nftables ruleset (readable, non-empty) with an input hook. A unit that merely is
 * "active" (systemctl) proves no ruleset; when nothing could be read (not root), the
 * answer is unknown.
 */
async function firewall(run: CommandRunner): Promise<Check> {
  const ufw = await run("ufw", ["status"]);
  if (ufw.ok && /^Status: active$/m.test(ufw.out)) return [true, "ufw active"];
  const nft = await run("nft", ["list", "ruleset"]);
  if (nft.ok) {
    if (nft.out.trim() === "") return [false, "nftables ruleset is empty"];
    const active = /\bchain\b[\s\S]*\bhook input\b/.test(nft.out);
    return [active, active ? "nftables input hook present" : "nftables ruleset has no input hook"];
  }
  if (ufw.ok && /^Status: inactive$/m.test(ufw.out))
    return [null, "ufw inactive; nftables ruleset not readable (run as root)"];
  return [null, "no firewall ruleset readable (ufw status / nft list ruleset failed; run as root)"];
}

async function screenLock(run: CommandRunner): Promise<Check> {
  const r = await run("gsettings", ["get", "org.gnome.desktop.screensaver", "lock-enabled"]);
  if (!r.ok) return [null, "no desktop session settings (gsettings) available"];
  const v = r.out.trim();
  if (v !== "true" && v !== "false") return [null, "gsettings lock-enabled: unreadable answer"];
  return [v === "true", `gnome lock-enabled=${v}`];
}

async function antivirus(run: CommandRunner): Promise<Check> {
  for (const svc of ["clamav-daemon", "falcon-sensor", "mdatp"]) {
    const r = await run("systemctl", ["is-active", svc]);
    if (r.out.trim() === "active") return [true, `${svc} active`];
  }
  const p = await run("pgrep", ["-x", "clamd"]);
  if (p.ok) return [true, "clamd running"];
  return [false, "no clamav-daemon/EDR service running"];
}

/**
 * Collects the device's posture on Linux by asking the system (apt, findmnt/lsblk,
 * ufw/nft, gsettings, systemd). A check that cannot be determined — a command that is
 * missing, fails, or answers something unreadable — is null (unknown, which scoring
 * counts as failed): the collector fails closed. `options.run` replaces the command
 * runner (tests).
 */
export async function collectPosture(
  options: { run?: CommandRunner } = {},
): Promise<CollectedPosture> {
  const runner = options.run ?? ((cmd: string, args: string[]) => run(cmd, args));
  const [os, updates, disk, fw, lock, av] = await Promise.all([
    osVersion(),
    osUpdates(runner),
    diskEncryption(runner),
    firewall(runner),
    screenLock(runner),
    antivirus(runner),
  ]);
  return {
    os,
    checks: {
      os_updates: updates[0],
      disk_encryption: disk[0],
      firewall: fw[0],
      screen_lock: lock[0],
      antivirus: av[0],
    },
    evidence: {
      os_updates: updates[1],
      disk_encryption: disk[1],
      firewall: fw[1],
      screen_lock: lock[1],
      antivirus: av[1],
    },
  };
}
