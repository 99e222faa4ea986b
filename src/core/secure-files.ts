import {
  statSync,
  writeFileSync,
  renameSync,
  readFileSync,
  existsSync,
  openSync,
  closeSync,
  fchmodSync,
  fsyncSync,
  fchownSync,
  realpathSync,
  unlinkSync,
  constants,
  type Stats,
} from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { ZtError } from "./errors.js";
import { makeDirectories } from "./make-directories.js";

/**
 * Writes a file readable by its owner only (0600), atomically (temp file + rename).
 * The directory must be the current user's (or root's) and writable by nobody else:
 * whoever else can write it could swap the file under us.
 */
export function writePrivateFile(path: string, data: string | Uint8Array): void {
  preparePrivateDirectory(dirname(path));
  writeFileAtomically(path, data, 0o600);
}

/**
 * Makes `dir` (0700) when missing and checks it is a directory of this user that no one
 * else can write (see assertPrivateDirectory). Call it before any work whose result is to
 * go there, so a bad folder fails the command before, not after, a key is made.
 */
export function preparePrivateDirectory(dir: string): void {
  try {
    makeDirectories(dir, 0o700);
  } catch (e) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${dir} is not a directory that can be created or used (${(e as NodeJS.ErrnoException).code ?? "error"})`,
      { path: dir },
    );
  }
  if (!statSync(dir).isDirectory())
    throw new ZtError("ZT_BAD_REQUEST", `${dir} is not a directory`, { path: dir });
  assertPrivateDirectory(dir);
}

/** A hidden, random name beside `path` for a file that is renamed over it once complete. */
export function tempPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(8).toString("hex")}.tmp`);
}

/**
 * Creates an empty file beside `path` (see tempPathBeside) with exactly `mode`,
 * exclusively (O_EXCL, O_NOFOLLOW: never through a file or symlink planted in advance). A
 * failure names `path`, the file the user asked for, not the temp name.
 */
export function createTempBeside(path: string, mode: number): { tmp: string; fd: number } {
  const tmp = tempPathBeside(path);
  let fd: number;
  try {
    fd = openSync(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      mode,
    );
  } catch (e) {
    throw onTarget(e, path);
  }
  try {
    fchmodSync(fd, mode); // the umask may have taken bits away, never added: be exact
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw onTarget(e, path);
  }
  return { tmp, fd };
}

/**
 * A file being written atomically (see beginAtomicWrite): its temp file exists from the
 * start, so a target that cannot be written is found before the work that makes its content.
 */
export interface PendingFile {
  /** Writes `data` to the temp file and fsyncs it; the target is not touched yet. */
  write(data: string | Uint8Array): void;
  /** Renames the written temp file over the target. */
  commit(): void;
  /** Removes the temp file unless committed: call it in a `finally`. */
  discard(): void;
}

/**
 * Starts writing `path` atomically with exactly `mode`: readers see the old file or the
 * new one, never a part. The temp file has a random name and is created now, exclusively
 * (O_EXCL, O_NOFOLLOW), so a file or symlink planted in advance — in a shared folder,
 * say — is never written through, and a directory or an unwritable place is refused
 * before any work. Errors name `path`, not the temp file.
 */
export function beginAtomicWrite(
  path: string,
  mode: number,
  owner?: { uid: number; gid: number },
): PendingFile {
  refuseDirectoryTarget(path);
  const { tmp, fd } = createTempBeside(path, mode);
  let open = true;
  let done = false;
  const close = () => {
    if (open) closeSync(fd);
    open = false;
  };
  const onFailure = (e: unknown): never => {
    close();
    throw onTarget(e, path);
  };
  if (owner) keepOwner(fd, owner);
  return {
    write(data) {
      try {
        writeFileSync(fd, data);
        fsyncSync(fd);
        close();
      } catch (e) {
        onFailure(e);
      }
    },
    commit() {
      try {
        close();
        renameSync(tmp, path);
        done = true;
        syncDirectory(dirname(path)); // the rename itself survives a crash
      } catch (e) {
        onFailure(e);
      }
    },
    discard() {
      close();
      if (done) return;
      done = true;
      try {
        unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    },
  };
}

/** Writes `path` atomically with exactly `mode` (see beginAtomicWrite). */
export function writeFileAtomically(
  path: string,
  data: string | Uint8Array,
  mode: number,
  owner?: { uid: number; gid: number },
): void {
  writePending(beginAtomicWrite(path, mode, owner), data);
}

function writePending(file: PendingFile, data: string | Uint8Array): void {
  try {
    file.write(data);
    file.commit();
  } finally {
    file.discard();
  }
}

/**
 * Replaces (or creates) a file the user named — a policy file `zt policy fmt` rewrites, a
 * `-o FILE` output — atomically: a crash, a full disk or a size limit mid-write leaves the
 * old file whole, never a truncated one. The new file keeps the old one's mode (and
 * owner, when root rewrites another user's file); a new file gets `newFileMode` less the
 * umask, as a plain write would. A symlink is written through (its target is replaced),
 * and a device or FIFO (`-o /dev/stdout`) written to directly.
 */
export function replaceFile(path: string, data: string | Uint8Array, newFileMode = 0o666): void {
  writePending(beginReplaceFile(path, newFileMode), data);
}

/**
 * Starts replacing a file the user named (see replaceFile): call it before the work that
 * makes the content, so a directory, a missing folder or a place that cannot be written
 * fails the command before it prints or writes anything.
 */
export function beginReplaceFile(path: string, newFileMode = 0o666): PendingFile {
  // `-o /dev/stdout`, a FIFO: nothing to replace, and no temp file can be renamed there.
  // Told by the path itself: /dev/stdout on a pipe resolves to a `pipe:[…]` name.
  if (isStream(path)) {
    let pending: string | Uint8Array | undefined;
    return {
      write: (data) => void (pending = data),
      commit: () => {
        if (pending !== undefined) writeFileSync(path, pending);
      },
      discard: () => undefined,
    };
  }
  let target = path;
  let old: Stats | undefined;
  try {
    target = realpathSync(path);
    old = statSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const mode = old ? old.mode & 0o777 : newFileMode & ~currentUmask();
  const owner = old && old.uid !== process.getuid?.() ? { uid: old.uid, gid: old.gid } : undefined;
  return beginAtomicWrite(target, mode, owner);
}

/** Whether `path` is there and neither a regular file nor a directory (a device, a FIFO). */
function isStream(path: string): boolean {
  try {
    const st = statSync(path);
    return !st.isFile() && !st.isDirectory();
  } catch {
    return false;
  }
}

/** The process umask (read by setting it and putting it back: Node has no getter). */
function currentUmask(): number {
  const mask = process.umask(0o022);
  process.umask(mask);
  return mask;
}

/** Gives the new file the replaced file's owner where allowed (root); else leaves it ours. */
function keepOwner(fd: number, owner: { uid: number; gid: number }): void {
  try {
    fchownSync(fd, owner.uid, owner.gid);
  } catch {
    /* not root: the file becomes ours, as an editor's save-by-rename would make it */
  }
}

/**
 * Refuses, as EISDIR naming it, an output path that is a directory: checked before any
 * work, so nothing is written beside it first.
 */
export function refuseDirectoryTarget(path: string): void {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    return; // not there yet (or unreadable): the write itself will say
  }
  if (isDir) throw errnoError("EISDIR", "open", path);
}

/** A file-system error of the temp file, told about the file the user named. */
function onTarget(e: unknown, path: string): unknown {
  const err = e as NodeJS.ErrnoException | undefined;
  if (typeof err?.code !== "string" || typeof err.syscall !== "string") return e;
  return errnoError(err.code, err.syscall, path, e);
}

function errnoError(code: string, syscall: string, path: string, cause?: unknown): Error {
  return Object.assign(new Error(`${code}: ${syscall} ${path}`, { cause }), {
    code,
    syscall,
    path,
  });
}

/**
 * Refuses a directory for key files that another user could change: owned by someone
 * other than the current user or root, or writable by group or others.
 */
export function assertPrivateDirectory(dir: string): void {
  const st = statSync(dir);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new ZtError(
      "ZT_FILE_PERMISSIONS",
      `directory ${dir} belongs to another user (uid ${st.uid}); key files go only in a directory of your own`,
      { path: dir, owner: st.uid },
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new ZtError(
      "ZT_FILE_PERMISSIONS",
      `directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod go-w ${dir}, or choose another directory`,
      { path: dir, mode: (st.mode & 0o777).toString(8) },
    );
  }
}

/**
 * Refuses a key file that group or others can read or write: fail closed before using it.
 * A directory is named as such (its mode says nothing about a key: `/tmp` was answered
 * with "run: chmod 600 /tmp"). `what` names the file in messages ("session token file").
 */
export function assertPrivateFile(path: string, what = "key file"): void {
  checkPrivateFile(path, what, "ZT_CONFIG_NOT_FOUND");
}

/**
 * As assertPrivateFile, for a private file a command-line flag names (`--key`): a missing
 * one is input not found (ZT_NOT_FOUND, exit 66, as for any other file a flag names), not
 * a configuration problem.
 */
export function assertPrivateInputFile(path: string, flag: string): void {
  checkPrivateFile(path, flag, "ZT_NOT_FOUND");
}

/** Reads a private file a command-line flag names, after checking it (assertPrivateInputFile). */
export function readPrivateInputFile(path: string, flag: string): Buffer {
  assertPrivateInputFile(path, flag);
  return readFileSync(path);
}

function checkPrivateFile(
  path: string,
  what: string,
  missing: "ZT_CONFIG_NOT_FOUND" | "ZT_NOT_FOUND",
): void {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    // Only ENOENT is "does not exist": a folder on the path that is a file, or one this
    // user may not enter, is said as such (the file may well be there).
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR")
      throw new ZtError("ZT_USAGE", `${what} ${path}: a component of the path is not a directory`, {
        path,
      });
    if (code === "EACCES")
      throw new ZtError("ZT_FILE_PERMISSIONS", `${what} ${path}: permission denied`, { path });
    throw new ZtError(missing, `${what} ${path} does not exist`, { path });
  }
  if (st.isDirectory())
    throw new ZtError("ZT_USAGE", `${what} ${path} is a directory, expected a file`, { path });
  const mode = st.mode;
  if ((mode & 0o077) !== 0) {
    throw new ZtError(
      "ZT_FILE_PERMISSIONS",
      `${what} ${path} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      { path, mode: (mode & 0o777).toString(8) },
    );
  }
}

/** Reads a private file after checking it (see assertPrivateFile). */
export function readPrivateFile(path: string, what = "key file"): Buffer {
  assertPrivateFile(path, what);
  return readFileSync(path);
}

export function fileExists(path: string): boolean {
  return existsSync(path);
}

/** fsyncs a directory, so a rename in it survives a crash; best effort where refused. */
export function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* some filesystems refuse fsync on a directory */
  }
}
