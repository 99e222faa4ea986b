import { open, type FileHandle } from "node:fs/promises";
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
