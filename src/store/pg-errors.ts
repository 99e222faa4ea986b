/**
 * Turns a connection error from `pg` or the socket/TLS layer into a short reason for
 * an operator ("connection refused", "authentication failed for user …"). The
 * password, if any, is scrubbed from whatever text is passed through.
 */
export function describePgError(e: unknown, password?: string): string {
  const err = e as { code?: string; message?: string } | undefined;
  const code = err?.code ?? "";
  const message = String(err?.message ?? e);
  let reason: string;
  switch (code) {
    case "ECONNREFUSED":
      reason = "connection refused (is PostgreSQL running and listening there?)";
      break;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      reason = "host name not found";
      break;
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      reason = `network unreachable (${code})`;
      break;
    case "ECONNRESET":
      reason = "connection reset by the server";
      break;
    case "28P01":
    case "28000":
    case "3D000":
      // PostgreSQL's own words: "password authentication failed for user …",
      // "database … does not exist". They never contain the password.
      reason = message;
      break;
    case "57P03":
      reason = "the server is starting up or shutting down";
      break;
    default:
      if (/timeout/i.test(message)) reason = "connection timed out";
      else if (/does not support SSL/i.test(message))
        reason = "the server does not accept TLS (check sslmode)";
      else if (
        /certificate|self[- ]signed|altname|SSL|TLS/i.test(message) ||
        /^(ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(code)
      )
        reason = `TLS: ${message}`;
      else reason = message;
  }
  return password ? reason.split(password).join("***") : reason;
}

/** True for errors that mean "the server is not there right now" rather than a bad query. */
export function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: string } | undefined)?.code ?? "";
  const message = String((e as Error | undefined)?.message ?? "");
  return (
    [
      "ECONNREFUSED",
      "ECONNRESET",
      "ETIMEDOUT",
      "EHOSTUNREACH",
      "ENETUNREACH",
      "EPIPE",
      "57P01",
      "57P02",
      "57P03",
    ].includes(code) || /Connection terminated|timeout|not queryable/i.test(message)
  );
}
