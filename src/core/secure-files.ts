import {
  statSync,
  writeFileSync,
  renameSync,
  mkdirSync,
  readFileSync,
  existsSync,
  chmodSync,
} from "node:fs";
import { dirname } from "node:path";
import { ZtError } from "./errors.js";

/** Writes a file readable by its owner only (0600), atomically (temp file + rename). */
export function writePrivateFile(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Refuses a key file that group or others can read or write: fail closed before using it. */
export function assertPrivateFile(path: string): void {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    throw new ZtError("ZT_CONFIG_NOT_FOUND", `key file ${path} does not exist`, { path });
  }
  if ((mode & 0o077) !== 0) {
    throw new ZtError(
      "ZT_FILE_PERMISSIONS",
      `key file ${path} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
      { path, mode: (mode & 0o777).toString(8) },
    );
  }
}

/** Reads a private file after checking its mode. */
export function readPrivateFile(path: string): Buffer {
  assertPrivateFile(path);
  return readFileSync(path);
}

export function fileExists(path: string): boolean {
  return existsSync(path);
}
