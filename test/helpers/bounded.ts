/**
 * `p`, or a rejection naming `what` if it has not settled within `ms`: a regression then
 * fails at this point rather than at the test's timeout.
 */
export async function bounded<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(what)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
