/**
 * The real OpenSSH server for tests: sshd on a loopback port with a host key certified by
 * zt's host CA, trusting zt's user CA, with zt's KRL as `RevokedKeys` (re-read by sshd at
 * every connection), and the real ssh client logging in with a key and its certificate.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "./free-port.js";
import type { PkiService } from "../../src/pki/index.js";

const SSHD = "/usr/sbin/sshd";
/** The Unix account certificates are signed for (created when missing). */
export const SSH_LOGIN = "ztsshtest";

/** Finds sshd, installing openssh-server when it is missing and we may (CI installs it). */
function ensureSshd(): void {
  if (existsSync(SSHD)) return;
  spawnSync("apt-get", ["install", "-y", "-q", "openssh-server", "openssh-client"], {
    stdio: "ignore",
  });
  if (!existsSync(SSHD)) throw new Error("sshd not found: install openssh-server");
}

function ensureUser(): void {
  if (spawnSync("id", [SSH_LOGIN]).status !== 0)
    execFileSync("useradd", ["-m", "-s", "/bin/sh", SSH_LOGIN]);
  // useradd leaves the account locked ("!"), which sshd refuses without PAM: no password, not locked.
  execFileSync("usermod", ["-p", "*", SSH_LOGIN]);
}

async function waitForPort(port: number, proc: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`sshd exited: ${log()}`);
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, "127.0.0.1", () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen: ${log()}`);
}

export interface Sshd {
  port: number;
  /** The KRL file sshd reads (`RevokedKeys`). */
  krlFile: string;
  /** Writes zt's current KRL where sshd reads it, as `zt ssh krl --out` would. */
  writeKrl(): Promise<void>;
  /** Everything sshd logged so far (LogLevel VERBOSE). */
  log(): string;
  /** The real ssh client: BatchMode, only this key and certificate, the host verified by zt's host CA. */
  login(key: string, cert: string, user?: string): Promise<{ status: number; out: string }>;
  stop(): void;
}

/** Starts sshd in `dir` (which must be readable by sshd) trusting `ssh`'s CAs and KRL. */
export async function startSshd(dir: string, ssh: PkiService["ssh"]): Promise<Sshd> {
  ensureSshd();
  ensureUser();
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  const hostCert = await ssh.signHost({
    publicKey: readFileSync(join(dir, "host_key.pub"), "utf8"),
    hostnames: ["127.0.0.1"],
    actor: "test",
  });
  writeFileSync(join(dir, "host_key-cert.pub"), hostCert.certLine);
  writeFileSync(join(dir, "user_ca.pub"), ssh.userCaLine() + "\n");
  writeFileSync(join(dir, "known_hosts"), ssh.knownHostsLine() + "\n");
  const krlFile = join(dir, "revoked.krl");
  const writeKrl = async () => writeFileSync(krlFile, await ssh.krl());
  await writeKrl();
  const port = await freePort();
  const config = [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${join(dir, "host_key")}`,
    `HostCertificate ${join(dir, "host_key-cert.pub")}`,
    `PidFile ${join(dir, "sshd.pid")}`,
    `TrustedUserCAKeys ${join(dir, "user_ca.pub")}`,
    `RevokedKeys ${krlFile}`,
    "AuthorizedPrincipalsFile none",
    "AuthorizedKeysFile none",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin no",
    "UsePAM no",
    "StrictModes no",
    "LogLevel VERBOSE",
  ].join("\n");
  writeFileSync(join(dir, "sshd_config"), config + "\n");
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const proc = spawn(SSHD, ["-D", "-e", "-f", join(dir, "sshd_config")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  proc.stderr?.on("data", (d) => (log += String(d)));
  await waitForPort(port, proc, () => log);

  function login(
    key: string,
    cert: string,
    user = SSH_LOGIN,
  ): Promise<{ status: number; out: string }> {
    const args = [
      "-p",
      String(port),
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "IdentityAgent=none",
      "-o",
      `UserKnownHostsFile=${join(dir, "known_hosts")}`,
      "-o",
      "GlobalKnownHostsFile=/dev/null",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "ConnectTimeout=20",
      "-i",
      key,
      "-o",
      `CertificateFile=${cert}`,
      `${user}@127.0.0.1`,
      "true",
    ];
    // Asynchronous, so sshd's log keeps flowing in meanwhile.
    return new Promise((resolve) => {
      const p = spawn("ssh", args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      p.stdout.on("data", (d) => (out += String(d)));
      p.stderr.on("data", (d) => (out += String(d)));
      const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
      p.on("close", (code) => {
        clearTimeout(timer);
        // Let sshd's log lines for this connection arrive.
        setTimeout(() => resolve({ status: code ?? -1, out }), 100);
      });
    });
  }

  return {
    port,
    krlFile,
    writeKrl,
    log: () => log,
    login,
    stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
    },
  };
}
