import { open, stat, type FileHandle } from "node:fs/promises";
import type { AuditRowChained } from "../audit-log.js";
import { formatEvent, type Sink, type SinkFormat } from "./sink.js";

/** JSON lines appended to a file (0600, fsynced per batch), or written to stdout. */
export function jsonlSink(
  name: string,
  target: { path: string } | "stdout",
  format: SinkFormat,
): Sink {
  let fh: FileHandle | undefined;
  return {
    name,
    async deliver(rows: AuditRowChained[]) {
      const text = rows.map((r) => JSON.stringify(formatEvent(r, format))).join("\n") + "\n";
      if (target === "stdout") {
        await new Promise<void>((res, rej) =>
          process.stdout.write(text, (e) => (e ? rej(e) : res())),
        );
        return;
      }
      if (fh && !(await samePath(fh, target.path))) {
        // Rotated (renamed or deleted, as logrotate does): write to the file now at the
        // path, not on into the old one, which is about to be compressed or removed.
        await fh.close().catch(() => undefined);
        fh = undefined;
      }
      fh ??= await open(target.path, "a", 0o600);
      await fh.write(text);
      await fh.sync();
    },
    async close() {
      await fh?.close();
      fh = undefined;
    },
  };
}

/** True while `path` still names the file `fh` has open. */
async function samePath(fh: FileHandle, path: string): Promise<boolean> {
  const [atPath, held] = await Promise.all([stat(path).catch(() => undefined), fh.stat()]);
  return atPath !== undefined && atPath.ino === held.ino && atPath.dev === held.dev;
}
