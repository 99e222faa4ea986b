import { createHash } from "node:crypto";

/** Escapes text for HTML element and attribute contexts. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `
:root{color-scheme:light dark;--fg:#1d2330;--muted:#5b6475;--bg:#f4f6fa;--card:#fff;--accent:#2456d8;--bad:#b42318}
@media(prefers-color-scheme:dark){:root{--fg:#e7eaf0;--muted:#9aa3b5;--bg:#11151c;--card:#1a202b;--accent:#7aa2ff;--bad:#ff8a80}}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg);display:grid;place-items:center;min-height:100vh}
main{background:var(--card);padding:2rem 2.25rem;border-radius:14px;box-shadow:0 6px 30px rgba(0,0,0,.08);width:min(420px,92vw)}
h1{font-size:1.35rem;margin:0 0 .25rem}p.sub{color:var(--muted);margin:0 0 1.5rem}
label{display:block;font-weight:600;font-size:.9rem;margin:1rem 0 .35rem}
input{width:100%;padding:.65rem .75rem;border:1px solid #c8cfdb;border-radius:8px;font:inherit;background:transparent;color:inherit}
input:focus{outline:2px solid var(--accent);border-color:transparent}
button{margin-top:1.5rem;width:100%;padding:.7rem;border:0;border-radius:8px;background:var(--accent);color:#fff;font:inherit;font-weight:600;cursor:pointer}
.err{background:rgba(180,35,24,.1);color:var(--bad);padding:.6rem .8rem;border-radius:8px;margin-bottom:1rem}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:rgba(127,127,127,.15);padding:.1rem .35rem;border-radius:5px;word-break:break-all}
dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem;margin:1rem 0}dt{color:var(--muted)}dd{margin:0}
.brand{font-weight:800;letter-spacing:.05em;color:var(--accent);margin-bottom:1rem}`;

/**
 * The CSP source that allows zt's one stylesheet and nothing else (CSP Level 2 §4.2.4: a
 * hash matches an inline `<style>` by its exact text), so the pages' CSP needs no
 * `'unsafe-inline'`: markup that ever slipped past escaping could not style the page to
 * read or hide what it shows (CSS exfiltration of attribute values, a fake form).
 */
export const PAGE_STYLE_SOURCE = `'sha256-${createHash("sha256").update(STYLE).digest("base64")}'`;

/** A whole zt page: `body` (markup the caller escaped) in zt's layout and stylesheet. */
export function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><main><div class="brand">zt</div>${body}</main></body></html>`;
}
