import { mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

/**
 * `mkdir -p`: makes `dir` and its missing parents (each with `mode`); a no-op when `dir`
 * is a directory already, EEXIST when it is something else.
 *
 * Not `mkdirSync(dir, { recursive: true })`: Node's walk takes ENOENT from mkdir as "the
 * parent is missing", makes the parent (EEXIST) and tries again, for ever, where a parent
 * exists but cannot hold new entries: a data_dir, --state-dir or --demo-dir under /proc
 * spun at 100% CPU and never answered. Here a parent that exists is not tried twice: the
 * child's own error (ENOENT, EACCES, ENOTDIR …, with path and syscall) is thrown.
 */
export function makeDirectories(dir: string, mode?: number): void {
  const missing: string[] = [];
  for (let at = resolve(dir); ; at = dirname(at)) {
    if (exists(at)) break;
    missing.push(at);
    if (dirname(at) === at) break; // the root itself is missing: mkdir says why
  }
  // There, but not a directory: mkdir's own EEXIST (with the path), as mkdir -p says.
  if (missing.length === 0 && !isDirectory(dir)) mkdirSync(dir);
  for (const at of missing.reverse()) {
    try {
      mkdirSync(at, mode === undefined ? {} : { mode });
    } catch (e) {
      // Made meanwhile by someone else: fine if it is a directory.
      if ((e as NodeJS.ErrnoException).code === "EEXIST" && isDirectory(at)) continue;
      throw e;
    }
  }
}

/** Whether anything is at `path` (a dangling symlink counts as nothing; mkdir then says EEXIST). */
function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    // ENOTDIR (a parent is a file), EACCES …: stop here; mkdir of the child reports it.
    return true;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
