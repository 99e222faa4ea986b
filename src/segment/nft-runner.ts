import { spawn } from "node:child_process";
import { ZtError } from "../core/errors.js";

/** Runs `nft` (optionally inside a network namespace); the one I/O edge of the rollout. */
export interface NftRunner {
  run(args: string[], input?: string): Promise<string>;
}

export interface NftRunnerOptions {
  /** Run inside `ip netns exec NAME`. */
  netns?: string;
  /** The nft binary (default `nft` from PATH). */
  nftPath?: string;
}

/** An NftRunner that spawns the real `nft`. Failures carry nft's own message. */
export function systemNftRunner(options: NftRunnerOptions = {}): NftRunner {
  const nft = options.nftPath ?? "nft";
  return {
    run(args, input) {
      const [cmd, argv] = options.netns
        ? ["ip", ["netns", "exec", options.netns, nft, ...args]]
        : [nft, args];
      return new Promise((resolve, reject) => {
        const child = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.on("error", (e) =>
          reject(
            new ZtError(
              "ZT_SEG_NFT_UNAVAILABLE",
              `cannot run ${cmd}: ${e.message} (install the nftables package)`,
            ),
          ),
        );
        child.on("close", (code) => {
          if (code === 0) resolve(out);
          else reject(new NftCommandError(args, code ?? -1, err.trim()));
        });
        child.stdin.on("error", () => undefined);
        child.stdin.end(input ?? "");
      });
    },
  };
}

/** nft ran and failed: exit code and its stderr. */
export class NftCommandError extends Error {
  constructor(
    readonly args: string[],
    readonly exitCode: number,
    readonly stderr: string,
  ) {
    super(
      `nft ${args.join(" ")} failed (exit ${exitCode}): ${stderr.split("\n").slice(0, 6).join("\n")}`,
    );
    this.name = "NftCommandError";
  }
}
