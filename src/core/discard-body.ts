/** How much of an answer zt has no use for it reads before hanging up. */
export const DISCARD_BODY_MAX_BYTES = 4096;

/**
 * Drops the body of a response zt only wanted the status of (a webhook's, a witness's, a
 * log receiver's): reads at most `maxBytes`, keeping none of it, then cancels the rest.
 * A receiver that answers with a huge or endless body costs neither memory nor more
 * than `maxBytes` of reading; a short body read to its end leaves the connection reusable.
 * Never throws (a reset or a timeout mid-body leaves nothing to read).
 *
 * @example
 * const res = await fetch(url, { method: "POST", body });
 * await discardBody(res);
 * if (!res.ok) throw new Error(`answered ${res.status}`);
 */
export async function discardBody(
  res: Response,
  maxBytes: number = DISCARD_BODY_MAX_BYTES,
): Promise<void> {
  if (!res.body) return;
  const reader = res.body.getReader();
  try {
    for (let seen = 0; seen <= maxBytes;) {
      const chunk = await reader.read();
      if (chunk.done) return;
      seen += chunk.value.byteLength;
    }
    await reader.cancel();
  } catch {
    // The body failed mid-way (reset, timeout): nothing more to read or to cancel.
  }
}
