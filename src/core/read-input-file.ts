import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { ZtError } from "./errors.js";

/** The default bound of readInputFile: far above any config, policy set or model. */
export const MAX_INPUT_FILE_BYTES = 64 * 1024 * 1024;

/**
 * Reads a file someone named (a config, `--entities`, `--facts`, a model) as UTF-8, at most
 * `maxBytes`. A device that never ends (`/dev/zero`, `/dev/urandom`) or a file far larger
 * than any such input is refused with ZT_PAYLOAD_TOO_LARGE naming it, instead of reading
 * until memory runs out; a pipe (`/dev/stdin`, `<(…)`) still works. File-system errors
 * are thrown as they come (ENOENT, EACCES, EISDIR for a directory), with the path.
 */
export function readInputFile(path: string, maxBytes = MAX_INPUT_FILE_BYTES): string {
  const fd = openSync(path, "r");
  try {
    if (fstatSync(fd).isDirectory())
      throw Object.assign(new Error(`EISDIR: read ${path}`), {
        code: "EISDIR",
        syscall: "read",
        path,
      });
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - total));
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      chunks.push(n === chunk.length ? chunk : chunk.subarray(0, n));
      total += n;
      if (total > maxBytes)
        throw new ZtError(
          "ZT_PAYLOAD_TOO_LARGE",
          `${path}: larger than ${formatBytes(maxBytes)}, or never ends; not a file zt reads`,
          { path },
        );
    }
    return Buffer.concat(chunks, total).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function formatBytes(n: number): string {
  return n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n} bytes`;
}
