import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readInputFile } from "./read-input-file.js";
import { isZtError } from "./errors.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-read-input-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("did not throw");
}

describe("readInputFile", () => {
  it("reads a file as UTF-8, up to and including its bound", () => {
    writeFileSync(join(dir, "a.yaml"), "data_dir: ./données\n");
    expect(readInputFile(join(dir, "a.yaml"))).toBe("data_dir: ./données\n");
    writeFileSync(join(dir, "ten"), "0123456789");
    expect(readInputFile(join(dir, "ten"), 10)).toBe("0123456789");
  });

  it("stops at the bound: /dev/zero is refused naming it instead of read until memory runs out", () => {
    for (const [path, max] of [
      ["/dev/zero", undefined],
      [join(dir, "ten"), 9],
    ] as const) {
      const e = thrown(() => readInputFile(path, max));
      expect(isZtError(e) && e.code).toBe("ZT_PAYLOAD_TOO_LARGE");
      expect((e as Error).message).toContain(path);
    }
  });

  it("refuses a directory as EISDIR naming it, and passes ENOENT through", () => {
    expect(thrown(() => readInputFile(dir))).toMatchObject({ code: "EISDIR", path: dir });
    expect(thrown(() => readInputFile(join(dir, "none")))).toMatchObject({ code: "ENOENT" });
  });

  it("still reads a pipe to its end (`--config /dev/stdin`, `<(…)`)", async () => {
    const fifo = join(dir, "pipe");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    // Another process writes: the read below blocks this one until the writer is done.
    const writer = spawn("sh", ["-c", `printf 'from a pipe\\n' > '${fifo}'`], { stdio: "ignore" });
    expect(readInputFile(fifo)).toBe("from a pipe\n");
    expect(await new Promise((r) => writer.on("close", r))).toBe(0);
  });
});
