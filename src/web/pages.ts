import { escapeHtml, page } from "./html.js";

export interface LoginPageOptions {
  /** Where to go after login (a same-host path). */
  returnTo: string;
  error?: string | undefined;
  stepUp?: boolean;
  username?: string | undefined;
}

/**
 * The sign-in form: password + authenticator code (or a backup code). The code field has
 * no `pattern`: the server reads codes with spaces and dashes (`123 456`, `k7mqa 2xw4d`),
 * and answers a malformed one like a wrong one.
 */
export function renderLoginPage(o: LoginPageOptions): string {
  const err = o.error ? `<div class="err" role="alert">${escapeHtml(o.error)}</div>` : "";
  const sub = o.stepUp
    ? "This resource needs a recent second factor. Sign in again to continue."
    : "Sign in with your password and authenticator code.";
  return page(
    "Sign in · zt",
    `<h1>Sign in</h1><p class="sub">${sub}</p>${err}
<form method="post" action="/.zt/login" autocomplete="on">
<input type="hidden" name="rd" value="${escapeHtml(o.returnTo)}">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required value="${escapeHtml(o.username ?? "")}" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="totp">Authenticator code</label><input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code" required placeholder="123456 or a backup code">
<button type="submit">Sign in</button></form>`,
  );
}

export interface DeniedPageOptions {
  decisionId: string;
  reason: string;
  hint: string;
  route: string;
}

/** The 403 page: decision id, stable reason, a hint — never policy text or internals. */
export function renderDeniedPage(o: DeniedPageOptions): string {
  return page(
    "Access denied · zt",
    `<h1>Access denied</h1><p class="sub">${escapeHtml(o.hint)}</p>
<dl><dt>App</dt><dd>${escapeHtml(o.route)}</dd><dt>Reason</dt><dd><code>${escapeHtml(o.reason)}</code></dd><dt>Decision</dt><dd><code>${escapeHtml(o.decisionId)}</code></dd></dl>
<p class="sub">Quote the decision id when you ask for help.</p>
<form method="post" action="/.zt/logout"><button type="submit">Sign out</button></form>`,
  );
}

/** What would change the answer, by stable reason. */
export function hintFor(reason: string, route: string): string {
  switch (reason) {
    case "mfa-too-old":
    case "step-up":
      return "This app needs a recent authenticator code: sign in again.";
    case "device-noncompliant":
    case "device-unknown":
      return "Your device does not meet the security requirements: run `zt device report` and fix the failed checks.";
    case "outside-business-hours":
      return "This app is only available during business hours.";
    case "network-not-allowed":
      return "This app is not reachable from your current network.";
    case "grant-required":
      return `Request time-boxed access: zt access request --resource 'App::"${route}"' --reason "…"`;
    case "session-cookie-duplicate":
      return "Your browser holds two sign-in cookies for this site: sign out (the Sign out button, or a POST to /.zt/logout), then sign in again.";
    case "authorization-duplicate":
      return "The request carries more than one Authorization header, so it is ambiguous: send one.";
    case "policy-error":
      return "The policy could not be evaluated, so access is denied. An operator can look up the decision id.";
    default:
      return `You do not have access to this app. Ask an administrator, or request access: zt access request --resource 'App::"${route}"'`;
  }
}
