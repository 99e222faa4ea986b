import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  type Stats,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import Database from "better-sqlite3";
import { ZtError } from "../core/errors.js";
import { createTempBeside, refuseDirectoryTarget, syncDirectory } from "../core/secure-files.js";
import type { SecretBox } from "../core/secret-box.js";
import { sealedPurpose } from "../keys/sealed-purposes.js";
import { allMigrations } from "./migrations/index.js";
import type { Store } from "./open-store.js";

/** What a backup file holds, as read back from it. */
export interface BackupSummary {
  file: string;
  bytes: number;
  /** Schema migrations applied in it. */
  migrations: number;
  /** The last audit record's seq (0: none). */
  auditHead: number;
  users: number;
}

/**
 * `zt db backup`: a consistent copy of the live SQLite database, taken while zt runs.
 * `VACUUM INTO` reads one snapshot (WAL: writers go on meanwhile) into a new file, which
 * is checked (integrity, a zt schema) before it takes `out`'s name; `out` is never a
 * partial file, and is 0600 from its creation. An existing `out` is kept unless `force`.
 */
export function backupSqlite(store: Store, out: string, force: boolean): BackupSummary {
  if (!store.sqlite || !store.file)
    throw new ZtError(
      "ZT_USAGE",
      `zt db backup copies the embedded SQLite store; this store is PostgreSQL (${store.location}): back it up with pg_dump (docs/scale-out.md, "Backups")`,
    );
  const target = resolve(out);
  if (sameFile(target, store.file) || target === store.file)
    throw new ZtError("ZT_USAGE", `${out} is the live database itself; choose another file`);
  // a directory is no backup file, --force or not (EISDIR naming it)
  refuseDirectoryTarget(target);
  if (existsSync(target) && !force)
    throw new ZtError("ZT_CONFLICT", `${out} exists; pass --force to replace it`, {
      path: out,
    });
  const dir = dirname(target);
  if (!existsSync(dir))
    throw new ZtError("ZT_NOT_FOUND", `${dir}: no such directory (to write ${out} in)`, {
      path: dir,
    });
  if (!statSync(dir).isDirectory())
    throw new ZtError("ZT_USAGE", `${dir} is not a directory`, { path: dir });
  const tmp = privateTempFile(target);
  try {
    try {
      store.sqlite.prepare("VACUUM INTO ?").run(tmp);
    } catch (e) {
      throw new ZtError("ZT_STORE", `cannot write the backup to ${out}: ${(e as Error).message}`, {
        path: out,
      });
    }
    syncFile(tmp);
    const summary = inspectBackup(tmp);
    if (force) renameSync(tmp, target);
    else {
      // link(2) fails if `out` appeared meanwhile: never replaced without --force.
      try {
        linkSync(tmp, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST")
          throw new ZtError("ZT_CONFLICT", `${out} exists; pass --force to replace it`, {
            path: out,
          });
        throw e;
      }
      unlinkSync(tmp);
    }
    syncDirectory(dir);
    return { ...summary, file: target };
  } finally {
    rmQuiet(tmp);
  }
}

/**
 * Reads a backup file without changing it: a SQLite database that passes
 * `integrity_check`, with zt's schema, made by this version of zt or an older one.
 */
export function inspectBackup(file: string): BackupSummary {
  // SQLite opens an empty file as an empty database: say what it is
  if (assertBackupFile(file).size === 0)
    throw new ZtError("ZT_STORE", `${file} is not a zt database backup: the file is empty`, {
      path: file,
    });
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (e) {
    throw new ZtError("ZT_STORE", `cannot read backup ${file}: ${(e as Error).message}`, {
      path: file,
    });
  }
  try {
    let integrity: string[];
    try {
      integrity = (db.pragma("integrity_check") as { integrity_check: string }[]).map(
        (r) => r.integrity_check,
      );
    } catch (e) {
      throw new ZtError(
        "ZT_STORE",
        `${file} is not a zt database backup: ${(e as Error).message}`,
        { path: file },
      );
    }
    if (integrity.length !== 1 || integrity[0] !== "ok")
      throw new ZtError(
        "ZT_STORE",
        `backup ${file} is damaged (integrity check: ${integrity.slice(0, 3).join("; ")})`,
        { path: file },
      );
    const applied = tableNames(db).has("zt_migrations")
      ? (db.prepare("SELECT name FROM zt_migrations").all() as { name: string }[]).map(
          (r) => r.name,
        )
      : [];
    if (applied.length === 0)
      throw new ZtError("ZT_STORE", `${file} is not a zt database backup (no zt schema in it)`, {
        path: file,
      });
    const known = new Set(Object.keys(allMigrations("sqlite")));
    const unknown = applied.filter((n) => !known.has(n));
    if (unknown.length > 0)
      throw new ZtError(
        "ZT_CONFLICT",
        `backup ${file} was made by a newer zt (migrations this version does not know: ${unknown.join(", ")}); restore it with that version`,
        { path: file, unknown },
      );
    const count = (sql: string): number =>
      Number((db.prepare(sql).get() as { n: number | null } | undefined)?.n ?? 0);
    return {
      file,
      bytes: statSync(file).size,
      migrations: applied.length,
      auditHead: count("SELECT max(seq) AS n FROM audit_events"),
      users: count("SELECT count(*) AS n FROM users"),
    };
  } finally {
    db.close();
  }
}

/**
 * The backup file's stat, or the file-system error that says why there is none, as it
 * comes (ENOENT, EACCES, with the path: the CLI maps it to ZT_NOT_FOUND …); a directory is
 * EISDIR and a device or FIFO ZT_USAGE, since neither is a backup file. Cheap: the CLI
 * calls it before anything else (the master key, the data directory).
 */
export function assertBackupFile(file: string): Stats {
  const st = statSync(file);
  if (st.isDirectory())
    throw Object.assign(new Error(`EISDIR: open ${file}`), {
      code: "EISDIR",
      syscall: "open",
      path: file,
    });
  if (!st.isFile())
    throw new ZtError("ZT_USAGE", `${file}: not a regular file (a backup is one)`, {
      path: file,
    });
  return st;
}

/**
 * Throws unless the backup's sealed keys open with `box` (the master key this zt would
 * run with): a store whose keys cannot be opened is of no use, and finding out at the
 * next start, after the live database was replaced, is too late.
 */
export function assertBackupOpensWith(file: string, box: SecretBox): void {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const names = tableNames(db);
    const sealed: { purpose: string; value: string }[] = [];
    if (names.has("keys"))
      for (const r of db.prepare("SELECT purpose, private_sealed FROM keys LIMIT 1").all() as {
        purpose: string;
        private_sealed: string;
      }[])
        sealed.push({ purpose: sealedPurpose.signingKey(r.purpose), value: r.private_sealed });
    if (names.has("pki_cas"))
      for (const r of db.prepare("SELECT id, private_sealed FROM pki_cas LIMIT 1").all() as {
        id: string;
        private_sealed: string;
      }[])
        sealed.push({ purpose: sealedPurpose.ca(r.id), value: r.private_sealed });
    for (const s of sealed) {
      try {
        box.open(s.purpose, s.value);
      } catch {
        throw new ZtError(
          "ZT_KEY_DECRYPT_FAILED",
          `the keys in backup ${file} do not open with this master key; restore with the master key that was in use when the backup was made (ZT_MASTER_KEY or master_key_file)`,
          { path: file },
        );
      }
    }
  } finally {
    db.close();
  }
}

export interface RestoreResult extends BackupSummary {
  /** Where the database it replaced was moved (undefined: there was none). */
  previous: string | undefined;
}

/**
 * `zt db restore`: replaces the SQLite database in `dataDir` with a checked backup. Only
 * while no process has the database open (zt must be stopped: its caches and positions
 * belong to the database it runs on). The database it replaces is not deleted: it is
 * checkpointed and moved aside, with its WAL, as `zt.db.pre-restore-<time>`.
 */
export function restoreSqlite(dataDir: string, backup: string, box: SecretBox): RestoreResult {
  const source = resolve(backup);
  const summary = inspectBackup(source);
  assertBackupOpensWith(source, box);
  const live = join(dataDir, "zt.db");
  if (sameFile(source, live))
    throw new ZtError("ZT_USAGE", `${backup} is the live database itself`);
  const users = processesUsing([live, `${live}-wal`]);
  if (users.length > 0)
    throw new ZtError(
      "ZT_CONFLICT",
      `the database ${live} is open in process ${users.join(", ")}: stop zt (and every zt command using this data directory) before restoring`,
      { pids: users },
    );
  // Copied in full first: a copy cut short (a full disk) leaves the live database in place.
  const tmp = privateTempFile(live);
  try {
    try {
      copyInto(source, tmp);
    } catch (e) {
      throw new ZtError(
        "ZT_STORE",
        `cannot copy backup ${backup} into ${dataDir}: ${(e as Error).message}; the live database is unchanged`,
        { path: backup },
      );
    }
    let previous: string | undefined;
    if (existsSync(live)) {
      const db = new Database(live, { fileMustExist: true });
      try {
        db.pragma("wal_checkpoint(TRUNCATE)");
      } finally {
        db.close();
      }
      previous = `${live}.pre-restore-${new Date().toISOString().replace(/[:.]/g, "-")}`;
      renameSync(live, previous);
      for (const side of ["-wal", "-shm"])
        if (existsSync(live + side)) renameSync(live + side, previous + side);
    }
    renameSync(tmp, live);
    syncDirectory(dataDir);
    return { ...summary, file: source, previous };
  } finally {
    rmQuiet(tmp);
  }
}

/** The pids (other than this one) holding any of `files` open, from /proc. */
export function processesUsing(files: string[]): number[] {
  const wanted = new Set(files.filter((f) => existsSync(f)).map((f) => realpathSync(f)));
  if (wanted.size === 0) return [];
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return []; // no /proc: nothing can be told (zt targets Linux)
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // gone, or another user's process we may not look into
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      if (wanted.has(target)) {
        pids.push(Number(entry));
        break;
      }
    }
  }
  return pids;
}

function tableNames(db: Database.Database): Set<string> {
  return new Set(
    (
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
    ).map((r) => r.name),
  );
}

/** An empty 0600 file beside `target`, created exclusively (never through a planted link). */
function privateTempFile(target: string): string {
  const { tmp, fd } = createTempBeside(target, 0o600);
  closeSync(fd);
  return tmp;
}

/** Copies a SQLite database file through SQLite (a consistent read), then fsyncs it. */
function copyInto(source: string, tmp: string): void {
  const db = new Database(source, { readonly: true, fileMustExist: true });
  try {
    db.prepare("VACUUM INTO ?").run(tmp);
  } finally {
    db.close();
  }
  syncFile(tmp);
}

function sameFile(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

function syncFile(path: string): void {
  const fd = openSync(path, "r+");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function rmQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* renamed, or never made */
  }
}
