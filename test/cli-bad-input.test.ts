/**
 * The real `bin/zt` given files that are not there, servers it cannot reach, URLs that
 * are not URLs and flag values it cannot use: one line naming what was wrong, the exit
 * code of a user's mistake from the error table (never 70, "internal error"), no stack.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { networkInterfaces } from "node:os";
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { freePort } from "./helpers/free-port.js";
import { exitCodeFor, type ZtErrorCode } from "../src/core/errors.js";
import { ROOT, runZt, tempDir, writeConfig, type RunResult } from "./helpers/zt-process.js";

let dir: string;
let config: string;
const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };

const zt = (args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> =>
  runZt(["--config", config, ...args], { env: { ...env, ...extraEnv }, cwd: dir });

function expectCleanError(r: RunResult, code: ZtErrorCode, message: RegExp): void {
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.code, r.stderr).toBe(exitCodeFor(code));
  expect(r.stderr).toMatch(message);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** Characters a terminal acts on (C0 but the line feed, DEL, C1) and Unicode bidi controls. */
const UNSAFE_TEXT =
  // eslint-disable-next-line no-control-regex -- looking for control characters is the point
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

beforeAll(async () => {
  dir = tempDir("zt-cli-bad-");
  config = writeConfig(dir, "data_dir: ./data\n", { "default.cedar": "" });
  const init = await zt(["init"]);
  expect(init.code, init.stderr).toBe(0);
  writeFileSync(join(dir, "id.pub"), "ssh-ed25519 AAAA test\n");
  mkdirSync(join(dir, "a-directory"));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("files named on the command line", () => {
  it("a missing --context @file is ZT_NOT_FOUND naming the file, not ZT_INTERNAL", async () => {
    const missing = join(dir, "no-such-context.json");
    const r = await zt([
      "policy",
      "explain",
      "--principal",
      'User::"a"',
      "--action",
      "GET",
      "--resource",
      'App::"x"',
      "--context",
      `@${missing}`,
    ]);
    expectCleanError(r, "ZT_NOT_FOUND", new RegExp(missing));
  });

  it("a missing --cert for zt cert renew is ZT_NOT_FOUND naming the file", async () => {
    const missing = join(dir, "no-such.pem");
    const r = await zt(["cert", "renew", "--cert", missing, "--key", missing]);
    expectCleanError(r, "ZT_NOT_FOUND", new RegExp(missing));
  });

  it("a directory where a file is expected is a usage error naming it", async () => {
    const d = join(dir, "a-directory");
    const r = await zt(["cert", "renew", "--cert", d, "--key", d]);
    expectCleanError(r, "ZT_USAGE", /directory/);
  });
});

describe("--server", () => {
  it("a server that does not answer is ZT_UNAVAILABLE naming the address, not `ZT_INTERNAL: fetch failed`", async () => {
    const port = await freePort();
    const r = await zt(
      [
        "ssh",
        "sign",
        "--key",
        join(dir, "id.pub"),
        "--principal",
        "alice",
        "--server",
        `http://127.0.0.1:${port}`,
      ],
      { ZT_SESSION_TOKEN: "x".repeat(43) },
    );
    expectCleanError(r, "ZT_UNAVAILABLE", new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`));
  });

  it("a --server that is not a URL is a usage error naming the flag", async () => {
    const r = await zt(
      ["ssh", "sign", "--key", join(dir, "id.pub"), "--principal", "alice", "--server", "zt-api"],
      { ZT_SESSION_TOKEN: "x".repeat(43) },
    );
    expectCleanError(r, "ZT_USAGE", /--server: .*"zt-api"/);
  });
});

describe("flag values", () => {
  it("zt alerts list -n abc is refused instead of silently listing 100", async () => {
    const r = await zt(["alerts", "list", "-n", "abc"]);
    expectCleanError(r, "ZT_USAGE", /--limit: .*"abc"/);
    expect(r.stdout).toBe("");
  });
});

describe("zt ssh krl --out", () => {
  it("never writes through a file planted at its temporary name (it was <out>.tmp-<pid>)", async () => {
    const { spawn } = await import("node:child_process");
    const { readFileSync, symlinkSync, existsSync, readdirSync } = await import("node:fs");
    const { ZT_BIN } = await import("./helpers/zt-process.js");
    const victim = join(dir, "victim.txt");
    writeFileSync(victim, "precious\n");
    const out = join(dir, "revoked.krl");
    const child = spawn(
      process.execPath,
      [ZT_BIN, "--config", config, "ssh", "krl", "--out", out],
      {
        cwd: dir,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    // Planted while the process starts (it loads its config and store first).
    symlinkSync(victim, `${out}.tmp-${child.pid}`);
    const code = await new Promise<number>((r) => child.on("close", (c) => r(c ?? -1)));
    expect(readFileSync(victim, "utf8")).toBe("precious\n");
    expect(code).toBe(0);
    expect(existsSync(out)).toBe(true);
    expect(
      readdirSync(dir).filter((f) => f.startsWith("revoked.krl.") && !f.endsWith(`${child.pid}`)),
    ).toEqual([]);
  });
});

describe("a session token is never sent over plain http off this host", () => {
  const external = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === "IPv4" && !a.internal)?.address;

  it.skipIf(external === undefined)(
    "zt ssh sign --server http://<another address> refuses before connecting",
    async () => {
      let received = "";
      const server = createServer((s) =>
        s.on("data", (d: Buffer) => {
          received += d.toString();
          if (received.includes("\r\n\r\n")) s.end("HTTP/1.1 500 No\r\ncontent-length: 0\r\n\r\n");
        }),
      );
      await new Promise<void>((r) => server.listen(0, "0.0.0.0", r));
      const port = (server.address() as { port: number }).port;
      const token = "T".repeat(43);
      try {
        const r = await zt(
          [
            "ssh",
            "sign",
            "--key",
            join(dir, "id.pub"),
            "--principal",
            "alice",
            "--server",
            `http://${external}:${port}`,
          ],
          { ZT_SESSION_TOKEN: token },
        );
        expectCleanError(r, "ZT_USAGE", /--server: .*in clear.*https:\/\//);
        expect(received).not.toContain(token);
      } finally {
        server.close();
      }
    },
  );

  it("zt device bind --server http://<a name> refuses, naming why", async () => {
    const tokenFile = join(dir, "session.token");
    writeFileSync(tokenFile, "T".repeat(43), { mode: 0o600 });
    const r = await zt([
      "device",
      "bind",
      "--server",
      "http://zt.example.test:8400",
      "--session-token-file",
      tokenFile,
      "--key-dir",
      join(dir, "keys"),
    ]);
    expectCleanError(r, "ZT_USAGE", /--server: .*in clear.*https:\/\//);
  });
});

describe("zt up", () => {
  it("a listen address already in use is ZT_UNAVAILABLE naming it, not ZT_INTERNAL", async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    try {
      const upConfig = join(dir, "up.yaml");
      writeFileSync(
        upConfig,
        `data_dir: ./data\nlisten: { proxy: "127.0.0.1:0", api: "127.0.0.1:${port}" }\n`,
      );
      const r = await runZt(["--config", upConfig, "up"], { env, cwd: dir });
      expectCleanError(r, "ZT_UNAVAILABLE", new RegExp(`127\\.0\\.0\\.1:${port}.*in use`));
    } finally {
      taken.close();
    }
  });
});

describe("zt up --demo", () => {
  it("with a --demo-dir that is a file exits with the error instead of printing it and running on (the demo app's listener stayed open)", async () => {
    const file = join(dir, "demo-dir-is-a-file");
    writeFileSync(file, "");
    const r = await runZt(["up", "--demo", "--demo-dir", file, "--demo-port", "0"], {
      env,
      cwd: dir,
      timeoutMs: 30_000,
    });
    expectCleanError(
      r,
      "ZT_USAGE",
      /demo-dir-is-a-file\/policies: a component of the path is not a directory/,
    );
  }, 60_000);
});

describe("tables print what users control without terminal control characters", () => {
  it("a device's reported os cannot send escape sequences to the admin's terminal through zt device list", async () => {
    expect((await zt(["user", "add", "mallory", "--no-qr"])).code).toBe(0);
    const keyDir = join(dir, "mallory-keys");
    const enrolled = await zt(["device", "enroll", "--as", "mallory", "--key-dir", keyDir]);
    expect(enrolled.code, enrolled.stderr).toBe(0);
    // The device owner writes the facts; the report is signed with their own device key.
    const facts = join(dir, "facts.json");
    const report = async (os: string) => {
      writeFileSync(facts, JSON.stringify({ os, checks: {} }));
      return zt(["device", "report", "--facts", facts, "--key-dir", keyDir]);
    };
    // C0 controls (ESC, BEL) in the os are refused before anything is sent or stored.
    const refused = await report("Linux\u001b]0;owned\u0007\u001b[2J");
    expect(refused.code, refused.stderr).toBe(65);
    expect(refused.stderr).toMatch(/ZT_DEVICE_INVALID/);
    // C1 controls (CSI as one byte) and bidi controls get through the report: the table escapes them.
    const sent = await report("Linux\u009b31m\u202eowned");
    expect([0, 3]).toContain(sent.code);
    const list = await zt(["device", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain("Linux");
    // eslint-disable-next-line no-control-regex -- looking for control characters is the point
    expect(list.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/);
    expect(list.stdout).toContain("\\u{9b}");
    expect(list.stdout).toContain("\\u{202e}");
  });

  it("an error message quoting a value does not write its escape sequence to the terminal (zt device approve $'\\e]0;evil\\a' retitled the admin's window)", async () => {
    const r = await zt(["device", "approve", "\u001b]0;evil\u0007\u009b2J"]);
    expectCleanError(r, "ZT_NOT_FOUND", /\\u\{1b\}\]0;evil\\u\{7\}\\u\{9b\}2J/);
    expect(r.stderr).not.toMatch(UNSAFE_TEXT);
  });

  it("a bidi override in a ban reason is shown as an escape in zt ban list, not obeyed (it reversed the rest of the row)", async () => {
    const reason = "phishing\u202e\u2066 gnissap \u2069\u200f\u061c";
    const added = await zt(["ban", "add", "198.51.100.77", "--for", "1h", "--reason", reason]);
    expect(added.code, added.stderr).toBe(0);
    const list = await zt(["ban", "list"]);
    expect(list.code, list.stderr).toBe(0);
    const row = list.stdout.split("\n").find((l) => l.includes("198.51.100.77"));
    expect(row).toMatch(/phishing\\u\{202e\}\\u\{2066\} gnissap \\u\{2069\}\\u\{200f\}\\u\{61c\}$/);
    expect(list.stdout).not.toMatch(UNSAFE_TEXT);
    // JSON output keeps the reason exactly as stored.
    const json = await zt(["ban", "list", "--json"]);
    expect((JSON.parse(json.stdout) as { reason: string }[]).map((b) => b.reason)).toContain(
      reason,
    );
  });

  it("a bidi override in an audit field is shown as an escape in zt audit tail", async () => {
    // The actor of a CLI change is `cli:$USER`, recorded as the event's subject.
    const added = await zt(["ban", "add", "198.51.100.78", "--for", "1h"], {
      USER: "ops\u202eevil",
    });
    expect(added.code, added.stderr).toBe(0);
    const tail = await zt(["audit", "tail", "-n", "50"]);
    expect(tail.code, tail.stderr).toBe(0);
    expect(tail.stdout).toContain("cli:ops\\u{202e}evil");
    expect(tail.stdout).not.toMatch(UNSAFE_TEXT);
  });
});

describe("secret files that are directories", () => {
  // A 0700 directory read as a file said "is a directory" without naming it; one others
  // can write (/tmp) was answered with "run: chmod 600 /tmp".
  const dirs = (): string[] => {
    const open = join(dir, "open-dir");
    const own = join(dir, "own-dir");
    mkdirSync(open, { recursive: true });
    mkdirSync(own, { recursive: true });
    chmodSync(open, 0o777);
    chmodSync(own, 0o700);
    return [open, own];
  };

  it("zt device bind --session-token-file DIR says it is a directory, naming it", async () => {
    for (const d of dirs()) {
      const r = await zt(["device", "bind", "--session-token-file", d]);
      expectCleanError(
        r,
        "ZT_USAGE",
        new RegExp(`--session-token-file ${d} is a directory, expected a file\n`),
      );
      expect(r.stderr).not.toMatch(/chmod/);
    }
  });

  it("zt cert renew --key DIR says it is a directory, naming it", async () => {
    const cert = join(dir, "renew-cert.pem");
    writeFileSync(cert, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    for (const d of dirs()) {
      const r = await zt(["cert", "renew", "--cert", cert, "--key", d]);
      expectCleanError(r, "ZT_USAGE", new RegExp(`--key ${d} is a directory, expected a file\n`));
      expect(r.stderr).not.toMatch(/chmod/);
    }
  });

  it("a master_key_file that is a directory is named as one", async () => {
    for (const d of dirs()) {
      const conf = join(dir, "master-key-dir.yaml");
      writeFileSync(conf, `data_dir: ./data\nmaster_key_file: ${d}\n`);
      const r = await runZt(["--config", conf, "user", "list"], {
        env: { ZT_MASTER_KEY: "" },
        cwd: dir,
      });
      expectCleanError(
        r,
        "ZT_USAGE",
        new RegExp(`master key file ${d} is a directory, expected a file\n`),
      );
    }
  });
});

describe("zt ban add", () => {
  it("refuses --for 0 instead of recording a ban that has already ended", async () => {
    const r = await zt(["ban", "add", "192.0.2.99", "--for", "0"]);
    expectCleanError(r, "ZT_USAGE", /--for: .*above 0/);
    const list = await zt(["ban", "list", "--all", "--json"]);
    expect(list.stdout).not.toContain("192.0.2.99");
  });
});

describe("options given an empty value", () => {
  it("are refused naming the option, instead of being read as not given (--as '' approved a device as nobody, -o '' wrote to stdout, --user '' listed everyone)", async () => {
    const keyDir = join(dir, "empty-as-keys");
    expect((await zt(["user", "add", "erin", "--no-qr"])).code).toBe(0);
    const enrolled = await zt(["device", "enroll", "--as", "erin", "--key-dir", keyDir, "--json"]);
    expect(enrolled.code, enrolled.stderr).toBe(0);
    const id = (JSON.parse(enrolled.stdout) as { id: string }).id;
    for (const [args, flag] of [
      [["device", "approve", id, "--as", ""], "--as"],
      [["session", "list", "--user", ""], "--user"],
      [["session", "revoke", "--user", ""], "--user"],
      [["audit", "export", "-o", ""], "--output"],
      [["ca", "crl", "--out", ""], "--out"],
      [["user", "add", "frank", "--group", "eng", "--group", ""], "--group"],
      [["ssh", "known-hosts", "--pattern", ""], "--pattern"],
    ] as const) {
      const r = await zt([...args]);
      expectCleanError(r, "ZT_USAGE", new RegExp(`^zt: error ZT_USAGE: ${flag} "": `));
      expect(r.stdout).toBe("");
    }
    const r = await runZt(["--config", "", "user", "list"], { env, cwd: dir });
    expectCleanError(r, "ZT_USAGE", /--config "": /);
    const shown = await zt(["device", "show", id, "--json"]);
    expect((JSON.parse(shown.stdout) as { status: string }).status).toBe("pending");
    expect((await zt(["user", "list", "--json"])).stdout).not.toContain("frank");
  });

  it("an empty ZT_USER is no actor: zt device approve records 'admin', not an empty name", async () => {
    const keyDir = join(dir, "empty-env-keys");
    const enrolled = await zt(["device", "enroll", "--as", "erin", "--key-dir", keyDir, "--json"]);
    const id = (JSON.parse(enrolled.stdout) as { id: string }).id;
    const r = await zt(["device", "approve", id], { ZT_USER: "" });
    expect(r.code, r.stderr).toBe(0);
    const tail = await zt(["audit", "tail", "-n", "1", "--json"]);
    expect(JSON.parse(tail.stdout)).toMatchObject({ kind: "device.approve", subject: "admin" });
  });
});

describe("zt ssh known-hosts --pattern", () => {
  it("refuses a pattern that would split the known_hosts line or add one of its own", async () => {
    for (const pattern of ["web\n* ssh-ed25519 AAAA attacker", "a b", "#x"]) {
      const r = await zt(["ssh", "known-hosts", "--pattern", pattern]);
      expectCleanError(r, "ZT_BAD_REQUEST", /host pattern: .*no spaces/);
      expect(r.stdout).toBe("");
    }
    const ok = await zt(["ssh", "known-hosts", "--pattern", "*.example.test,[bastion]:2222"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(
      /^@cert-authority \*\.example\.test,\[bastion\]:2222 ssh-ed25519 \S+ \S+\n$/,
    );
  });
});

describe("an output path that is a directory", () => {
  it("is named in the error, not zt's temporary file beside it, and nothing is left there", async () => {
    const target = join(dir, "out-is-a-dir");
    mkdirSync(target);
    const { readdirSync } = await import("node:fs");
    const before = readdirSync(dir).sort();
    const krl = await zt(["ssh", "krl", "--out", target]);
    expectCleanError(krl, "ZT_USAGE", new RegExp(`^zt: error ZT_USAGE: ${target}: is a directory`));
    const exp = await zt(["audit", "export", "-o", target]);
    expectCleanError(
      exp,
      "ZT_BAD_REQUEST",
      new RegExp(`^zt: error ZT_BAD_REQUEST: -o ${target}: .*EISDIR`),
    );
    for (const r of [krl, exp]) expect(r.stderr).not.toMatch(/\.tmp/);
    expect(readdirSync(dir).sort()).toEqual(before);
  });
});

describe("input files that never end", () => {
  it("a config, --entities, a model, --key or a log that is /dev/zero is refused naming it, instead of read until memory runs out", async () => {
    const cases: [string[], ZtErrorCode, RegExp][] = [
      [
        ["--config", "/dev/zero", "user", "list"],
        "ZT_CONFIG_INVALID",
        /config file \/dev\/zero: larger than/,
      ],
      [
        [
          "--config",
          config,
          "policy",
          "explain",
          "--principal",
          'User::"a"',
          "--action",
          "GET",
          "--resource",
          'App::"x"',
          "--entities",
          "/dev/zero",
        ],
        "ZT_PAYLOAD_TOO_LARGE",
        /\/dev\/zero: larger than/,
      ],
      [
        ["--config", config, "seg", "check", "-m", "/dev/zero"],
        "ZT_PAYLOAD_TOO_LARGE",
        /\/dev\/zero/,
      ],
      [
        ["--config", config, "seg", "learn", "--from", "/dev/zero"],
        "ZT_BAD_REQUEST",
        /\/dev\/zero: a device/,
      ],
      [
        ["--config", config, "audit", "verify", "--key", "/dev/zero"],
        "ZT_USAGE",
        /--key: \/dev\/zero: larger than/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const r = await runZt(args, { env, cwd: dir, timeoutMs: 20_000 });
      expectCleanError(r, code, message);
    }
  }, 120_000);
});

describe("misleading answers", () => {
  it("a data_dir that is a file is named as such (was 'already exists (EEXIST, mkdir)' or 'master key file …/master.key not found')", async () => {
    const file = join(dir, "data-is-a-file");
    writeFileSync(file, "x\n");
    const cfg = join(dir, "data-file.yaml");
    writeFileSync(cfg, `data_dir: ${file}\n`);
    // With the master key in the environment, and without it (then read from data_dir).
    for (const key of [env.ZT_MASTER_KEY, ""]) {
      const r = await runZt(["--config", cfg, "user", "list"], {
        env: { ZT_MASTER_KEY: key },
        cwd: dir,
      });
      expectCleanError(r, "ZT_CONFIG_INVALID", /data_dir: .* is not a directory/);
    }
  });

  it("zt cert revoke 00 says what a serial is, not 'serial must be hexadecimal'", async () => {
    const r = await zt(["cert", "revoke", "00"]);
    expectCleanError(
      r,
      "ZT_BAD_REQUEST",
      /serial: expected a certificate serial .*never all zeros.*"00"/,
    );
  });

  it("zt audit export --until before --since is refused instead of exporting nothing with exit 0", async () => {
    const r = await zt(["audit", "export", "--since", "1h", "--until", "2h"]);
    expectCleanError(r, "ZT_USAGE", /--until "2h" is before --since "1h"/);
    expect(r.stdout).toBe("");
  });

  it("zt audit export --since with epoch ms past any date is refused instead of exporting nothing with exit 0", async () => {
    const r = await zt(["audit", "export", "--since", "99999999999999999999"]);
    expectCleanError(r, "ZT_USAGE", /--since: .*99999999999999999999.* is not a date/);
    expect(r.stdout).toBe("");
  });

  it("zt audit explain with an empty or oversized decision id is a usage error, not 'no decision' echoing it back", async () => {
    const empty = await zt(["audit", "explain", ""]);
    expectCleanError(empty, "ZT_USAGE", /decision id: an empty value/);
    const huge = await zt(["audit", "explain", "d".repeat(5000)]);
    expectCleanError(huge, "ZT_USAGE", /decision id: longer than 200 characters/);
    expect(huge.stderr.length).toBeLessThan(400);
  });
});

describe("a reader that goes away (zt … | head)", () => {
  it("ends the command quietly instead of an unhandled EPIPE with a stack trace", async () => {
    const { spawn } = await import("node:child_process");
    const { ZT_BIN } = await import("./helpers/zt-process.js");
    for (const args of [
      ["user", "list"],
      ["audit", "export", "--since", "1000d"],
    ]) {
      const child = spawn(process.execPath, [ZT_BIN, "--config", config, ...args], {
        cwd: dir,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      // The read end closes before zt writes a byte: its first write fails with EPIPE.
      child.stdout.destroy();
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
      expect(stderr, args.join(" ")).toBe("");
      expect(code).toBe(0);
    }
  });
});

describe("durations too long for a date", () => {
  it("zt ban add --for 99999999999999999h is refused; it stored a ban whose end no Date can hold and broke zt ban list (ZT_INTERNAL: Invalid time value)", async () => {
    const r = await zt(["ban", "add", "192.0.2.77", "--for", "99999999999999999h"]);
    expectCleanError(r, "ZT_USAGE", /--for: .*at most 36500d/);
    const list = await zt(["ban", "list", "--all"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).not.toContain("192.0.2.77");
  });

  it("zt ban list still lists a ban stored with such an end before --for was bounded", async () => {
    const { default: Database } = await import("better-sqlite3");
    const db = new Database(join(dir, "data", "zt.db"));
    try {
      db.prepare(
        "INSERT INTO audit_bans (key, kind, value, rule, reason, created_at, until, count, lifted_at) VALUES (?, 'ip', ?, 'manual', 'manual', ?, ?, 1, NULL)",
      ).run("ip:192.0.2.78", "192.0.2.78", Date.now(), 3.6e23);
    } finally {
      db.close();
    }
    const list = await zt(["ban", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/ip:192\.0\.2\.78 +3\.6e\+23 \(not a date\)/);
  });

  it("zt audit export --since 99999999999999999999h is refused instead of exporting everything", async () => {
    const r = await zt(["audit", "export", "--since", "99999999999999999999h"]);
    expectCleanError(r, "ZT_USAGE", /--since: /);
    expect(r.stdout).toBe("");
  });
});

describe("key files that are not files", () => {
  it("zt ssh sign --key on a FIFO or a device is refused at once instead of blocking or reading forever", async () => {
    const { spawnSync } = await import("node:child_process");
    const fifo = join(dir, "key.fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    for (const key of [fifo, "/dev/zero"]) {
      const r = await zt(["ssh", "host-sign", "--key", key, "--hostname", "web.example.test"]);
      expectCleanError(r, "ZT_PKI_KEY_INVALID", /not a regular file/);
    }
  }, 20_000);
});

describe("arguments commander refuses", () => {
  it("carry the stable code too: zt: error ZT_USAGE: … (exit 64)", async () => {
    for (const args of [
      ["user", "list", "--bogus"],
      ["user", "add"],
      ["session", "revoke", "a", "b"],
      ["bogus"],
    ]) {
      const r = await zt(args);
      expect(r.code, r.stderr).toBe(64);
      expect(r.stderr.split("\n")[0]).toMatch(/^zt: error ZT_USAGE: \S/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});

describe("zt cert renew --server", () => {
  it("keeps the current certificate and key when the server answers 200 without a certificate for the new key", async () => {
    const { readFileSync } = await import("node:fs");
    const http = await import("node:http");
    const out = join(dir, "svid");
    const issued = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/ns/renew",
      "--out",
      out,
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const files = ["chain.pem", "svid.key", "bundle.pem"].map((f) => join(out, f));
    const before = files.map((f) => readFileSync(f, "utf8"));
    // A front proxy's error page, a captive portal, or the wrong service answering 200.
    const answers = [
      { type: "text/html", body: "<html>maintenance</html>" },
      { type: "application/json", body: JSON.stringify({ cert_chain: "nope", bundle: "x" }) },
    ];
    for (const a of answers) {
      const server = http.createServer((_req, res) => {
        res.writeHead(200, { "content-type": a.type });
        res.end(a.body);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      try {
        const r = await zt([
          "cert",
          "renew",
          "--cert",
          files[0]!,
          "--key",
          files[1]!,
          "--bundle",
          files[2]!,
          "--server",
          `http://127.0.0.1:${(server.address() as { port: number }).port}`,
        ]);
        expectCleanError(r, "ZT_UNAVAILABLE", /certificate/);
        expect(files.map((f) => readFileSync(f, "utf8"))).toEqual(before);
      } finally {
        server.close();
      }
    }
  });
});

describe("zt ssh sign --server", () => {
  it("writes no certificate file when the server answers 200 without an OpenSSH certificate", async () => {
    const { existsSync } = await import("node:fs");
    const http = await import("node:http");
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>maintenance</html>");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const out = join(dir, "from-garbage-cert.pub");
    try {
      const r = await zt(
        [
          "ssh",
          "sign",
          "--key",
          join(dir, "id.pub"),
          "--principal",
          "alice",
          "--out",
          out,
          "--server",
          `http://127.0.0.1:${(server.address() as { port: number }).port}`,
        ],
        { ZT_SESSION_TOKEN: "x".repeat(43) },
      );
      expectCleanError(r, "ZT_UNAVAILABLE", /certificate/);
      expect(existsSync(out)).toBe(false);
    } finally {
      server.close();
    }
  });
});

describe("zt seg compile -t k8s", () => {
  it("refuses --host, --segment and --router (nftables only) instead of ignoring them", async () => {
    const model = join(ROOT, "examples", "segments.yaml");
    for (const extra of [["--host", "web-1"], ["--segment", "web"], ["--router"]]) {
      const r = await zt(["seg", "compile", "-t", "k8s", "-m", model, ...extra]);
      expectCleanError(r, "ZT_USAGE", new RegExp(`${extra[0]}: only for -t nftables`));
      expect(r.stdout).toBe("");
    }
    const plain = await zt(["seg", "compile", "-t", "k8s", "-m", model]);
    expect(plain.code, plain.stderr).toBe(0);
  });
});

describe("zt ban add --reason", () => {
  it("refuses a reason over 500 characters (it was stored whole, in the ban and the audit log), naming the option and the limit", async () => {
    for (const reason of ["x".repeat(501), "é".repeat(60_000)]) {
      const r = await zt(["ban", "add", "192.0.2.77", "--for", "1h", "--reason", reason]);
      expectCleanError(r, "ZT_USAGE", /--reason: at most 500 characters, got \d+/);
    }
    const list = await zt(["ban", "list", "--json"]);
    expect(JSON.parse(list.stdout)).not.toContainEqual(
      expect.objectContaining({ key: "ip:192.0.2.77" }),
    );
    // 500 characters, counted as characters (not UTF-16 units or bytes), are taken
    const ok = await zt(["ban", "add", "192.0.2.78", "--for", "1h", "--reason", "😀".repeat(500)]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await zt(["ban", "remove", "192.0.2.78"])).toMatchObject({ code: 0 });
  });
});

describe("listings filtered by --user", () => {
  it("zt device list and zt access list --user <nobody> name the missing user, as zt session list does (they printed an empty list)", async () => {
    for (const args of [
      ["device", "list", "--user", "nobody-here"],
      ["access", "list", "--user", "nobody-here"],
      ["session", "list", "--user", "nobody-here"],
      ["session", "revoke", "--user", "nobody-here", "--reason", "test"],
    ]) {
      const r = await zt(args);
      expectCleanError(r, "ZT_USER_NOT_FOUND", /no user named nobody-here/);
    }
    // a user who exists and has none: an empty list, exit 0
    expect((await zt(["user", "add", "lister"])).code).toBe(0);
    for (const args of [
      ["device", "list", "--user", "lister", "--json"],
      ["access", "list", "--user", "lister", "--json"],
      ["session", "list", "--user", "lister", "--json"],
    ]) {
      const r = await zt(args);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([]);
    }
  });
});

describe("zt ssh sign --client-key", () => {
  it("refuses an SVID private key that group or others can read, naming it, before any connection (it was read and used)", async () => {
    const { chmodSync } = await import("node:fs");
    const cert = join(dir, "svid-for-ssh.pem");
    const key = join(dir, "svid-for-ssh.key");
    writeFileSync(cert, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    writeFileSync(key, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n");
    const args = (port: number) => [
      "ssh",
      "sign",
      "--key",
      join(dir, "id.pub"),
      "--principal",
      "alice",
      "--server",
      `http://127.0.0.1:${port}`,
      "--client-cert",
      cert,
      "--client-key",
      key,
    ];
    for (const mode of [0o644, 0o640, 0o604]) {
      chmodSync(key, mode);
      const r = await zt(args(await freePort()));
      expectCleanError(r, "ZT_FILE_PERMISSIONS", new RegExp(`${key}.*chmod 600`));
    }
    // 0600 passes the check and goes on to the (closed) server
    chmodSync(key, 0o600);
    const r = await zt(args(await freePort()));
    expect(r.stderr).not.toMatch(/ZT_FILE_PERMISSIONS/);
  });
});

describe("zt cert renew --key", () => {
  it("a file that is not a PEM private key (an OpenSSH key, text) is named, not ZT_INTERNAL 'DECODER routines::unsupported'", async () => {
    const out = join(dir, "renew-svid");
    const issued = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/renew-key",
      "--out",
      out,
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const before = readFileSync(join(out, "chain.pem"), "utf8");
    const sshKey = join(dir, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", sshKey]);
    const text = join(dir, "not-a-key");
    writeFileSync(text, "hello\n", { mode: 0o600 });
    for (const key of [sshKey, text]) {
      const r = await zt(["cert", "renew", "--cert", join(out, "chain.pem"), "--key", key]);
      expectCleanError(
        r,
        "ZT_PKI_KEY_INVALID",
        new RegExp(`--key ${key}: not a PEM private key \\(PKCS#8, SEC1 or PKCS#1\\)`),
      );
    }
    expect(readFileSync(join(out, "chain.pem"), "utf8")).toBe(before);
  }, 60_000);
});

describe("zt ssh sign --server --client-cert/--client-key", () => {
  it("files that are not a PEM key or certificate are named, not blamed on the server (`ZT_UNAVAILABLE: cannot reach the server: DECODER routines::unsupported`)", async () => {
    const out = join(dir, "client-svid");
    const issued = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/ssh-client",
      "--out",
      out,
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const sshKey = join(dir, "id_client");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", sshKey]);
    const text = join(dir, "not-a-cert.pem");
    writeFileSync(text, "hello\n");
    const server = `https://127.0.0.1:${await freePort()}`;
    const sign = (cert: string, key: string) =>
      zt([
        "ssh",
        "sign",
        "--key",
        join(dir, "id.pub"),
        "--principal",
        "alice",
        "--server",
        server,
        "--client-cert",
        cert,
        "--client-key",
        key,
      ]);
    expectCleanError(
      await sign(join(out, "chain.pem"), sshKey),
      "ZT_PKI_KEY_INVALID",
      new RegExp(`--client-key ${sshKey}: not a PEM private key`),
    );
    expectCleanError(
      await sign(text, join(out, "svid.key")),
      "ZT_BAD_REQUEST",
      new RegExp(`--client-cert ${text}: no PEM certificate in it`),
    );
  }, 60_000);
});
