import { basename } from "node:path";
import { isZtError, ZtError } from "../core/errors.js";
import { readInputFile } from "../core/read-input-file.js";
import { parseSegModel, type ParseModelResult } from "./parse-model.js";

/** Reads and parses a model file; errors name the file's base name, line and key. */
export async function loadSegModelFile(path: string): Promise<ParseModelResult & { text: string }> {
  let text: string;
  try {
    text = readInputFile(path);
  } catch (e) {
    // Only a missing file is "not found": a directory or a permission is told as it is
    // (the CLI names it with its own code).
    if (isZtError(e) || (e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    throw new ZtError(
      "ZT_NOT_FOUND",
      `${path}: cannot read the model (${(e as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  return { ...parseSegModel(text, basename(path)), text };
}
