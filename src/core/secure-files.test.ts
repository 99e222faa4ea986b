import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assertPrivateFile, assertPrivateInputFile } from "./secure-files.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-secure-files-"));
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

describe("assertPrivateFile / assertPrivateInputFile", () => {
  it("accepts a 0600 file, refuses one others can read, and a directory", () => {
    writeFileSync(join(dir, "key"), "k", { mode: 0o600 });
    expect(() => assertPrivateInputFile(join(dir, "key"), "--key")).not.toThrow();
    writeFileSync(join(dir, "open"), "k", { mode: 0o644 });
    expect(thrown(() => assertPrivateFile(join(dir, "open")))).toMatchObject({
      code: "ZT_FILE_PERMISSIONS",
    });
    mkdirSync(join(dir, "folder"));
    expect(thrown(() => assertPrivateInputFile(join(dir, "folder"), "--key"))).toMatchObject({
      code: "ZT_USAGE",
      message: /--key .*folder is a directory/,
    });
  });

  it("says a missing file does not exist (the code the caller chose), and a path through a file is not a directory, not missing", () => {
    expect(thrown(() => assertPrivateInputFile(join(dir, "none"), "--key"))).toMatchObject({
      code: "ZT_NOT_FOUND",
      message: /--key .*none does not exist/,
    });
    expect(thrown(() => assertPrivateFile(join(dir, "none")))).toMatchObject({
      code: "ZT_CONFIG_NOT_FOUND",
    });
    writeFileSync(join(dir, "plain"), "x", { mode: 0o600 });
    const e = thrown(() => assertPrivateInputFile(join(dir, "plain", "key"), "--key"));
    expect(e).toMatchObject({ code: "ZT_USAGE", message: /--key .*plain\/key: .*not a directory/ });
    expect((e as Error).message).not.toMatch(/does not exist/);
  });
});
