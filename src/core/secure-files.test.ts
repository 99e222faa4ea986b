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

describe("assertPrivateFile / assertPrivateInputFile", () => {
  it("accepts a 0600 file, refuses one others can read, and a directory", () => {
    writeFileSync(join(dir, "key"), "k", { mode: 0o600 });
    expect(() => assertPrivateInputFile(join(dir, "key"), "--key")).not.toThrow();
    writeFileSync(join(dir, "open"), "k", { mode: 0o644 });
    expect(() => assertPrivateFile(join(dir, "open"))).toThrow(
      expect.objectContaining({
        code: "ZT_FILE_PERMISSIONS",
      }),
    );
    mkdirSync(join(dir, "folder"));
    expect(() => assertPrivateInputFile(join(dir, "folder"), "--key")).toThrow(
      expect.objectContaining({
        code: "ZT_USAGE",
        message: expect.stringMatching(/--key .*folder is a directory/),
      }),
    );
  });

  it("says a missing file does not exist (the code the caller chose), and a path through a file is not a directory, not missing", () => {
    expect(() => assertPrivateInputFile(join(dir, "none"), "--key")).toThrow(
      expect.objectContaining({
        code: "ZT_NOT_FOUND",
        message: expect.stringMatching(/--key .*none does not exist/),
      }),
    );
    expect(() => assertPrivateFile(join(dir, "none"))).toThrow(
      expect.objectContaining({
        code: "ZT_CONFIG_NOT_FOUND",
      }),
    );
    writeFileSync(join(dir, "plain"), "x", { mode: 0o600 });
    expect(() => assertPrivateInputFile(join(dir, "plain", "key"), "--key")).toThrow(
      expect.objectContaining({
        code: "ZT_USAGE",
        message: expect.stringMatching(
          /--key .*plain\/key: a component of the path is not a directory$/,
        ),
      }),
    );
  });
});
