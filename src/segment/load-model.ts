import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { ZtError } from "../core/errors.js";
import { parseSegModel, type ParseModelResult } from "./parse-model.js";

/** Reads and parses a model file; errors name the file's base name, line and key. */
export async function loadSegModelFile(path: string): Promise<ParseModelResult & { text: string }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ZtError(
      "ZT_NOT_FOUND",
      `${path}: cannot read the model (${(e as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  return { ...parseSegModel(text, basename(path)), text };
}
