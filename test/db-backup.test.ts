/**
 * `zt db backup` and `zt db restore` through the real CLI (bin/zt, built by `npm run
 * build`) against a real running `zt up` on SQLite, and the refusals that keep a bad
 * backup, a running zt or the wrong master key from costing the live database; and the
 * PostgreSQL store, whose backups are pg_dump's, on a real PostgreSQL.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  copyFileSync,
  existsSync,
  readdirSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import {
  runZt,
  startZtUp,
  tempDir,
  writeConfig,
  ZT_BIN,
  type UpProcess,
} from "./helpers/zt-process.js";
import { spawnSync } from "node:child_process";
import { engines } from "./store-fixture.js";

const ENGINES = await engines();
// Each test runs the real CLI a dozen times (a process start each) and zt up.
vi.setConfig({ testTimeout: 180_000 });

function setup(): { dir: string; config: string; data: string } {
  const dir = tempDir("zt-db-backup-");
  const data = join(dir, "data");
  const config = writeConfig(
    dir,
    [
      `data_dir: ${data}`,
      "trust_domain: backup.test",
      "listen:",
      '  proxy: "127.0.0.1:0"',
      '  api: "127.0.0.1:0"',
      `policies: ${join(dir, "policies")}`,
      "",
    ].join("\n"),
    { "main.cedar": 'permit (principal in Group::"ops", action, resource);\n' },
  );
  return { dir, config, data };
}

async function users(config: string): Promise<string[]> {
  const r = await runZt(["--config", config, "user", "list", "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { name: string }[]).map((u) => u.name).sort();
}

/** A clean refusal: the stable code, no stack trace, a non-zero exit. */
function refused(r: { code: number; stderr: string }, code: string): void {
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe("zt db backup / restore (SQLite)", () => {
  const ups: UpProcess[] = [];
  afterEach(async () => {
    for (const u of ups.splice(0)) await u.stop();
  });

  it("backs up a running zt, refuses to restore under it, and restores once it is stopped", async () => {
    const { dir, config, data } = setup();
    expect((await runZt(["--config", config, "init"])).code).toBe(0);
    expect((await runZt(["--config", config, "user", "add", "alice", "--group", "ops"])).code).toBe(
      0,
    );
    const up = await startZtUp(["--config", config, "up"]);
    ups.push(up);

    const file = join(dir, "backups", "zt-backup.db");
    mkdirSync(join(dir, "backups"), { mode: 0o700 });
    const b = await runZt(["--config", config, "db", "backup", file, "--json"]);
    expect(b.code, b.stderr).toBe(0);
    const summary = JSON.parse(b.stdout) as { users: number; audit_head: number; file: string };
    expect(summary).toMatchObject({ file, users: 1 });
    expect(summary.audit_head).toBeGreaterThan(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // Only the backup in the folder: no temp file left behind.
    expect(readdirSync(join(dir, "backups"))).toEqual(["zt-backup.db"]);
    // Never over an existing file without --force.
    refused(await runZt(["--config", config, "db", "backup", file]), "ZT_CONFLICT");

    // Work after the backup, then a restore attempt while zt still runs: refused, nothing lost.
    expect((await runZt(["--config", config, "user", "add", "bob"])).code).toBe(0);
    const busy = await runZt(["--config", config, "db", "restore", file]);
    refused(busy, "ZT_CONFLICT");
    expect(busy.stderr).toContain(String(up.child.pid));
    expect(await users(config)).toEqual(["alice", "bob"]);

    await up.stop();
    const r = await runZt(["--config", config, "db", "restore", file, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const restored = JSON.parse(r.stdout) as { previous: string; users: number };
    expect(restored.users).toBe(1);
    expect(await users(config)).toEqual(["alice"]);
    // The replaced database is kept, whole (bob is in it).
    const previous = new Database(restored.previous, { readonly: true });
    const kept = (
      previous.prepare("SELECT name FROM users ORDER BY name").all() as {
        name: string;
      }[]
    ).map((u) => u.name);
    previous.close();
    expect(kept).toEqual(["alice", "bob"]);
    expect(statSync(join(data, "zt.db")).mode & 0o077).toBe(0);

    // The restored log verifies and says it was restored; zt runs on it.
    const verify = await runZt(["--config", config, "audit", "verify"]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const tail = await runZt(["--config", config, "audit", "tail", "-n", "1", "--json"]);
    expect(tail.stdout).toContain('"db.restore"');
    const again = await startZtUp(["--config", config, "up"]);
    ups.push(again);
  });

  it("refuses a file that is not a sound zt backup, or one the master key does not open, leaving the live database as it was", async () => {
    const { dir, config, data } = setup();
    expect((await runZt(["--config", config, "init"])).code).toBe(0);
    expect((await runZt(["--config", config, "user", "add", "alice"])).code).toBe(0);
    const good = join(dir, "good.db");
    expect((await runZt(["--config", config, "db", "backup", good])).code).toBe(0);
    const before = readdirSync(data).sort();

    const junk = join(dir, "junk.db");
    writeFileSync(junk, randomBytes(8192));
    refused(await runZt(["--config", config, "db", "restore", junk]), "ZT_STORE");

    const cut = join(dir, "cut.db");
    copyFileSync(good, cut);
    truncateSync(cut, Math.floor(statSync(good).size / 2));
    refused(await runZt(["--config", config, "db", "restore", cut]), "ZT_STORE");

    const foreign = join(dir, "foreign.db");
    const other = new Database(foreign);
    other.exec("CREATE TABLE t (x)");
    other.close();
    refused(await runZt(["--config", config, "db", "restore", foreign]), "ZT_STORE");

    const newer = join(dir, "newer.db");
    copyFileSync(good, newer);
    const n = new Database(newer);
    n.prepare("INSERT INTO zt_migrations (name, timestamp) VALUES (?, ?)").run(
      "9999_from_the_future",
      new Date().toISOString(),
    );
    n.close();
    const newerRun = await runZt(["--config", config, "db", "restore", newer]);
    refused(newerRun, "ZT_CONFLICT");
    expect(newerRun.stderr).toContain("9999_from_the_future");

    const wrongKey = await runZt(["--config", config, "db", "restore", good], {
      env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
    });
    refused(wrongKey, "ZT_KEY_DECRYPT_FAILED");

    // A text file, an empty file: named as no backup (SQLite reads an empty file as an empty database).
    const text = join(dir, "notes.txt");
    writeFileSync(text, "not a database\n");
    const textRun = await runZt(["--config", config, "db", "restore", text]);
    refused(textRun, "ZT_STORE");
    expect(textRun.stderr).toContain(`${text} is not a zt database backup`);
    const empty = join(dir, "empty.db");
    writeFileSync(empty, "");
    const emptyRun = await runZt(["--config", config, "db", "restore", empty]);
    refused(emptyRun, "ZT_STORE");
    expect(emptyRun.stderr).toContain(`${empty} is not a zt database backup: the file is empty`);

    // A missing backup is not found (it was ZT_STORE, "cannot read backup … stat"), a directory
    // or a device is no backup file: each named.
    const nope = join(dir, "nope.db");
    const missing = await runZt(["--config", config, "db", "restore", nope]);
    refused(missing, "ZT_NOT_FOUND");
    expect(missing.code).toBe(66);
    expect(missing.stderr).toContain(`backup: ${nope}: no such file or directory`);
    const aDir = await runZt(["--config", config, "db", "restore", dir]);
    refused(aDir, "ZT_USAGE");
    expect(aDir.stderr).toContain(`backup: ${dir}: is a directory, expected a file`);
    const device = await runZt(["--config", config, "db", "restore", "/dev/null"]);
    refused(device, "ZT_USAGE");
    expect(device.stderr).toContain("backup: /dev/null: not a regular file");
    refused(
      await runZt(["--config", config, "db", "backup", join(data, "zt.db"), "--force"]),
      "ZT_USAGE",
    );
    // A target zt cannot create is named as given, not as the hidden temp file beside it.
    const unwritable = await runZt(["--config", config, "db", "backup", "/proc/zt-backup.db"]);
    refused(unwritable, "ZT_NOT_FOUND");
    expect(unwritable.stderr).toContain("/proc/zt-backup.db:");
    expect(unwritable.stderr).not.toContain(".tmp");
    // A directory is no backup file, --force or not (it was "exists; pass --force", then a
    // rename error naming the hidden temp file); a missing folder is not found, a file no folder.
    for (const force of [[], ["--force"]]) {
      const intoDir = await runZt(["--config", config, "db", "backup", dir, ...force]);
      refused(intoDir, "ZT_USAGE");
      expect(intoDir.stderr).toContain(`${dir}: is a directory, expected a file`);
      expect(intoDir.stderr).not.toContain(".tmp");
    }
    const noFolder = join(dir, "no-such-folder", "b.db");
    const missingDir = await runZt(["--config", config, "db", "backup", noFolder]);
    refused(missingDir, "ZT_NOT_FOUND");
    expect(missingDir.stderr).toContain(`${join(dir, "no-such-folder")}: no such directory`);
    const underFile = await runZt(["--config", config, "db", "backup", join(good, "b.db")]);
    refused(underFile, "ZT_USAGE");
    expect(underFile.stderr).toContain(`${good} is not a directory`);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(readdirSync(data).sort()).toEqual(before);
    expect(await users(config)).toEqual(["alice"]);
    const verify = await runZt(["--config", config, "audit", "verify"]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it("a restore cut short (a full disk, here a file size limit) leaves the live database in place, whole", async () => {
    const { dir, config, data } = setup();
    expect((await runZt(["--config", config, "init"])).code).toBe(0);
    expect((await runZt(["--config", config, "user", "add", "alice"])).code).toBe(0);
    const good = join(dir, "good.db");
    expect((await runZt(["--config", config, "db", "backup", good])).code).toBe(0);
    expect((await runZt(["--config", config, "user", "add", "bob"])).code).toBe(0);
    const before = readdirSync(data).sort();
    // Writes past half the backup's size fail (EFBIG): the copy into data_dir cannot finish.
    const r = spawnSync(
      "prlimit",
      [
        `--fsize=${Math.floor(statSync(good).size / 2)}`,
        process.execPath,
        ZT_BIN,
        "--config",
        config,
        "db",
        "restore",
        good,
      ],
      { encoding: "utf8", timeout: 120_000 },
    );
    refused({ code: r.status ?? -1, stderr: r.stderr }, "ZT_STORE");
    expect(r.stderr).toContain("the live database is unchanged");
    expect(readdirSync(data).sort()).toEqual(before);
    expect(await users(config)).toEqual(["alice", "bob"]);
  });

  it("a missing backup is named before anything else is looked at or made (no data directory, no master key)", async () => {
    const { dir, config, data } = setup();
    const nope = join(dir, "nope.db");
    const r = await runZt(["--config", config, "db", "restore", nope]);
    refused(r, "ZT_NOT_FOUND");
    expect(r.stderr).toContain(`backup: ${nope}: no such file or directory`);
    expect(existsSync(data)).toBe(false);
  });
});

describe.each(ENGINES.filter((e) => e.name === "postgres"))("zt db backup: $name", (engine) => {
  it("points a PostgreSQL store to pg_dump / pg_restore instead of copying anything", async () => {
    const t = await engine.fresh();
    try {
      const { dir } = setup();
      const config = join(dir, "zt-pg.yaml");
      writeFileSync(
        config,
        `data_dir: ${t.storeOptions.dataDir}\ndatabase_url: ${t.storeOptions.databaseUrl}\npolicies: ${join(dir, "policies")}\n`,
      );
      expect((await runZt(["--config", config, "init"])).code).toBe(0);
      const b = await runZt(["--config", config, "db", "backup", join(dir, "b.db")]);
      refused(b, "ZT_USAGE");
      expect(b.stderr).toContain("pg_dump");
      const r = await runZt(["--config", config, "db", "restore", join(dir, "b.db")]);
      refused(r, "ZT_USAGE");
      expect(r.stderr).toContain("pg_restore");
      expect(readdirSync(dir)).not.toContain("b.db");
    } finally {
      await t.cleanup();
    }
  });
});
