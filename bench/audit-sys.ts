import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

export function nproc(): number {
  return availableParallelism();
}

export function cpus(): string {
  try {
    const m = /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"));
    return m?.[1]?.trim() ?? "unknown CPU";
  } catch {
    return "unknown CPU";
  }
}
