import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeDirectories } from "./make-directories.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-make-dirs-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errnoOf(f: () => unknown): NodeJS.ErrnoException {
  try {
    f();
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
  throw new Error("did not throw");
}

describe("makeDirectories", () => {
  it("makes a directory and its missing parents, each with the mode given", () => {
    const deep = join(dir, "a", "b", "c");
    makeDirectories(deep, 0o700);
    for (const p of [join(dir, "a"), join(dir, "a", "b"), deep]) {
      expect(statSync(p).isDirectory()).toBe(true);
      expect(statSync(p).mode & 0o077).toBe(0);
    }
  });

  it("is a no-op on a directory that is there, through a symlink too", () => {
    makeDirectories(dir);
    symlinkSync(dir, join(dir, "link"));
    makeDirectories(join(dir, "link"));
    makeDirectories(join(dir, "link", "under-link"));
    expect(existsSync(join(dir, "under-link"))).toBe(true);
  });

  it("says EEXIST for a file where the directory should be, and ENOTDIR under one, with the path", () => {
    const file = join(dir, "file");
    writeFileSync(file, "");
    expect(errnoOf(() => makeDirectories(file))).toMatchObject({ code: "EEXIST", path: file });
    expect(errnoOf(() => makeDirectories(join(file, "x", "y")))).toMatchObject({
      code: "ENOTDIR",
      syscall: "mkdir",
    });
  });

  it("says EEXIST for a dangling symlink where a parent should be", () => {
    const dangling = join(dir, "dangling");
    symlinkSync(join(dir, "nowhere"), dangling);
    expect(errnoOf(() => makeDirectories(join(dangling, "x")))).toMatchObject({
      code: "EEXIST",
      path: dangling,
    });
  });

  it("throws at once under a parent that exists but takes no new entries (/proc), where Node's recursive mkdir loops for ever", () => {
    expect(errnoOf(() => makeDirectories("/proc/zt-make-dirs-test/x"))).toMatchObject({
      code: "ENOENT",
      path: "/proc/zt-make-dirs-test",
      syscall: "mkdir",
    });
  });
});
