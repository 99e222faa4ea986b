import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { PostureChecks } from "./posture-score.js";

export interface CollectedPosture {
  os: string;
  checks: PostureChecks;
  /** Per check, what was run and seen (for the operator; never secrets). */
  evidence: Record<string, string>;
}

function run(
  cmd: string,
  args: string[],
  timeoutMs = 20_000,
): Promise<{ ok: boolean; code: number; out: string }> {
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

async function osVersion(): Promise<string> {
  try {
    const text = await readFile("/etc/os-release", "utf8");
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(text);
    return m?.[1] ?? "linux";
  } catch {
    return "linux";
  }
}

/** Pending security updates via a simulated apt upgrade (no changes made). */
async function osUpdates(): Promise<[boolean | null, string]> {
  const r = await run("apt-get", ["-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]);
  if (r.code === -1 && !r.out) return [null, "apt-get not available"];
  const pending = r.out
    .split("\n")
    .filter((l) => l.startsWith("Inst ") && /-security/i.test(l)).length;
  return [pending === 0, `${pending} pending security update(s)`];
}

async function diskEncryption(): Promise<[boolean | null, string]> {
  const r = await run("lsblk", ["-n", "-o", "TYPE"]);
  if (!r.ok) return [null, "lsblk failed"];
  const crypt = r.out.split("\n").some((l) => l.trim() === "crypt");
  return [crypt, crypt ? "a LUKS (crypt) device is mapped" : "no crypt device mapped"];
}

async function firewall(): Promise<[boolean | null, string]> {
  const ufw = await run("ufw", ["status"]);
  if (ufw.ok && /Status: active/.test(ufw.out)) return [true, "ufw active"];
  const nft = await run("nft", ["list", "ruleset"]);
  if (nft.ok) {
    const active = /\bchain\b[\s\S]*\bhook input\b/.test(nft.out);
    return [active, active ? "nftables input hook present" : "nftables ruleset has no input hook"];
  }
  const svc = await run("systemctl", ["is-active", "nftables"]);
  if (svc.out.trim() === "active") return [true, "nftables.service active"];
  return [false, "no active ufw or nftables ruleset found"];
}

async function screenLock(): Promise<[boolean | null, string]> {
  const r = await run("gsettings", ["get", "org.gnome.desktop.screensaver", "lock-enabled"]);
  if (!r.ok) return [null, "no desktop session settings (gsettings) available"];
  const on = r.out.trim() === "true";
  return [on, `gnome lock-enabled=${r.out.trim()}`];
}

async function antivirus(): Promise<[boolean | null, string]> {
  for (const svc of ["clamav-daemon", "falcon-sensor", "mdatp"]) {
    const r = await run("systemctl", ["is-active", svc]);
    if (r.out.trim() === "active") return [true, `${svc} active`];
  }
  const p = await run("pgrep", ["-x", "clamd"]);
  if (p.ok) return [true, "clamd running"];
  return [false, "no clamav-daemon/EDR service running"];
}

/**
 * Collects the device's posture on Linux by asking the system (apt, lsblk, ufw/nft,
 * gsettings, systemd). A check that cannot be determined is null (counts as failed).
 */
export async function collectPosture(): Promise<CollectedPosture> {
  const [os, updates, disk, fw, lock, av] = await Promise.all([
    osVersion(),
    osUpdates(),
    diskEncryption(),
    firewall(),
    screenLock(),
    antivirus(),
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
