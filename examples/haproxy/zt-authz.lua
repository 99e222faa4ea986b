-- zt forward-auth for HAProxy 2.6+ (built with Lua, as Debian's and most distributions'
-- packages are). For every request the action asks zt's GET /.zt/authz and either lets
-- the request on with zt's identity headers, or answers with zt's own 302/401/403.
--
--   global
--       setenv ZT_AUTHZ_URL http://127.0.0.1:8443/.zt/authz    # before lua-load
--       lua-load /etc/haproxy/zt-authz.lua
--   frontend app
--       acl zt_pages path /.zt/login /.zt/logout /.zt/denied    # exactly: not /.zt/authz
--       http-request lua.zt_authz unless zt_pages
--       http-request del-header Authorization unless zt_pages  # a zt token is not the app's
--
-- zt is sent only the headers built below: a client's own X-Original-* or X-Forwarded-*
-- never reach it. The path goes as the client sent it (and so on to the app): zt refuses
-- one that is not canonical.
--
-- Fails closed: if zt cannot be asked, the answer is 503, never "allow".

local authz_url = os.getenv("ZT_AUTHZ_URL") or "http://127.0.0.1:8443/.zt/authz"
local session_cookie = os.getenv("ZT_SESSION_COOKIE") or "zt_session"
local timeout_ms = tonumber(os.getenv("ZT_AUTHZ_TIMEOUT_MS") or "5000")

-- Set only from zt's answer: whatever the client sent under these names is removed.
local identity_headers = { "x-zt-assertion", "x-zt-user", "x-zt-groups", "x-zt-decision-id" }
-- Relayed to the client with a refusal (with zt's body).
-- zt's page security headers (X-Frame-Options, CSP …) go with it: HAProxy sends the page.
local refusal_headers = {
  "location", "content-type", "cache-control", "www-authenticate",
  "x-zt-decision-id", "x-zt-reason", "x-zt-login-url",
  "x-frame-options", "content-security-policy", "x-content-type-options", "referrer-policy",
}

-- HAProxy header tables hold each header's values in a table indexed from 0 (a table
-- indexed from 1 is read too). Each value once: a repeated Cookie header must not become
-- two session cookies, nor an app's cookie twice.
local function values(headers, name)
  local v = headers and headers[name]
  if v == nil then return {} end
  if type(v) ~= "table" then return { v } end
  local out = {}
  local i = v[0] ~= nil and 0 or 1
  while v[i] ~= nil do out[#out + 1] = v[i]; i = i + 1 end
  return out
end

local function first(headers, name)
  return values(headers, name)[1]
end

-- The Cookie header without zt's session cookie (the app never needs the credential).
local function without_session(cookie)
  local kept = {}
  for part in string.gmatch(cookie, "[^;]+") do
    local p = part:gsub("^%s+", ""):gsub("%s+$", "")
    local name = p:match("^([^=]*)")
    if p ~= "" and name ~= session_cookie then kept[#kept + 1] = p end
  end
  return table.concat(kept, "; ")
end

local function refuse(txn, status, headers, body)
  txn:done(txn:reply({ status = status, headers = headers, body = body }))
end

core.register_action("zt_authz", { "http-req" }, function(txn)
  local req = txn.http:req_get_headers()
  for _, n in ipairs(identity_headers) do txn.http:req_del_header(n) end

  local tls = txn.f:ssl_fc()
  local ask = {
    ["x-forwarded-method"] = { txn.f:method() },
    ["x-forwarded-proto"] = { (tls == true or tls == 1) and "https" or "http" },
    ["x-forwarded-host"] = { first(req, "host") or "" },
    ["x-forwarded-uri"] = { txn.f:pathq() },
    ["x-forwarded-for"] = { txn.f:src() },
  }
  local cookies = values(req, "cookie")
  if #cookies > 0 then ask["cookie"] = { table.concat(cookies, "; ") } end
  -- Every Authorization header, each as sent: zt refuses a request carrying several.
  local authorization = values(req, "authorization")
  if #authorization > 0 then ask["authorization"] = authorization end
  local accept = values(req, "accept")
  if #accept > 0 then ask["accept"] = { table.concat(accept, ", ") } end

  local ok, res = pcall(function()
    return core.httpclient():get({ url = authz_url, headers = ask, timeout = timeout_ms })
  end)
  if not ok or res == nil or res.status == nil or res.status == 0 then
    core.Warning("zt-authz: zt did not answer: " .. tostring(ok and (res and res.status) or res))
    refuse(txn, 503, { ["content-type"] = { "application/json" } },
      '{"error":{"code":"ZT_FORWARD_AUTH_UNAVAILABLE","message":"the access check could not be made"}}')
    return
  end

  if res.status == 200 then
    for _, n in ipairs(identity_headers) do
      local v = first(res.headers, n)
      if v then txn.http:req_set_header(n, v) end
    end
    if #cookies > 0 then
      local rest = without_session(table.concat(cookies, "; "))
      txn.http:req_del_header("cookie")
      if rest ~= "" then txn.http:req_set_header("cookie", rest) end
    end
    return
  end

  local headers = {}
  for _, n in ipairs(refusal_headers) do
    local v = first(res.headers, n)
    if v then headers[n] = { v } end
  end
  refuse(txn, res.status, headers, res.body or "")
end, 0)
