export { renderLoginPage, renderDeniedPage, hintFor } from "./pages.js";
export type { LoginPageOptions, DeniedPageOptions } from "./pages.js";
export { escapeHtml, page } from "./html.js";
export {
  PAGE_SECURITY_HEADERS,
  JSON_SECURITY_HEADERS,
  rawJsonRefusal,
} from "./security-headers.js";
