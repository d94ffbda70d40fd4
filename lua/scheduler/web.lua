--- scheduler.web: the web dashboard (`lua-scheduler web`).
--
--   local web = require "scheduler.web"
--   local app = web.app { api = s, database = label, read_only = false, token = nil }
--   local res = app:handle(req)   -- req: { method, path, query, headers, cookies, body }
--   web.serve { api = s, listen = "127.0.0.1:8080", ... }  -- lua-http on cqueues
--
-- app:handle is the whole dashboard as a function of a request table (the
-- specs call it directly); web.serve only adapts lua-http's streams to it.
-- Every database access goes through the scheduler API the CLI uses
-- (stats, jobs, job, retry, retry_failed, cancel, delete): no SQL here.
--
-- Security (issue 15 item 5):
--   * the Host header must name the address listened on (a DNS-rebinding
--     page cannot read a loopback dashboard); with a token, any host;
--   * --token: every page needs the token (Authorization: Bearer T, Basic
--     with T as the password, or the cookie the sign-in form sets);
--   * every action is a POST carrying the session's CSRF token (an HMAC of
--     the session cookie under a secret drawn at start, so nothing is
--     stored), from the same origin (Origin and Sec-Fetch-Site, when the
--     browser sends them); cookies are HttpOnly and SameSite=Strict;
--   * --read-only: no action is shown, every POST is refused (403);
--   * every field is escaped (scheduler.web.html), and a Content-Security-
--     Policy allows no inline script, so even a missed one would not run;
--   * the database password: the page shows the masked label, and every
--     error text goes through mask() before reaching a page or the log.

local html = require "scheduler.web.html"
local assets = require "scheduler.web.assets"
local text = require "scheduler.cli.text"

local web = {}

local concat = table.concat

-- How many jobs a search, a group or a group action looks through, and how
-- many a list shows: the dashboard stays fast whatever the queue holds; the
-- page says when a limit was reached.
web.LIST_LIMIT = 200
web.SCAN_LIMIT = 10000
-- The largest request body read (a form is a few hundred bytes).
web.BODY_LIMIT = 64 * 1024

---------------------------------------------------------------------------
-- secrets and tokens
---------------------------------------------------------------------------

local function use_lua_http()
  if package.searchpath("http.server", package.path) then return end
  -- Debian 12 installs lua-http (pure Lua) for Lua 5.1-5.3 only: the same
  -- files run unchanged on 5.4 (as examples/http_server.lua does).
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua"
    .. ";/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"
end
web.use_lua_http = use_lua_http

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function random_hex(n)
  local rand = require "openssl.rand"
  return hex(rand.bytes(n))
end

local function hmac(key, msg)
  local h = require("openssl.hmac").new(key, "sha256")
  return hex(h:final(msg))
end

--- a == b, in time that depends on their lengths only (a token compared
-- byte by byte would tell an attacker how much of it was right).
local function same(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end
web.same = same

local mask = text.mask

--- "scheduler: jobs: ..." -> "jobs: ...".
local function errors_strip(e)
  return (tostring(e):gsub("^scheduler: ", ""))
end

local function decode_base64(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  s = s:gsub("[^%w%+/=]", ""):gsub("=+$", "")
  local bits = s:gsub(".", function(c)
    local v = alphabet:find(c, 1, true) - 1
    local b = {}
    for i = 5, 0, -1 do b[#b + 1] = (v >> i) & 1 end
    return concat(b)
  end)
  return (bits:gsub("%d%d%d%d%d%d%d%d", function(byte) return string.char(tonumber(byte, 2)) end):gsub("[01]+$", ""))
end

---------------------------------------------------------------------------
-- requests
---------------------------------------------------------------------------

local function url_decode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- key=value&... as a table (the first value of a repeated key).
function web.parse_query(s)
  local t = {}
  for pair in (s or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = url_decode(k)
    if t[k] == nil then t[k] = url_decode(v) end
  end
  return t
end

function web.parse_cookies(s)
  local t = {}
  for pair in (s or ""):gmatch("[^;]+") do
    local k, v = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and t[k] == nil then t[k] = v end
  end
  return t
end

--- "back": where an action returns to; only a path of this site (a
-- "//host" or "/\host" would leave it).
local function safe_back(s)
  if type(s) ~= "string" or not s:match("^/[^/\\]") and s ~= "/" then return "/" end
  if s:find("[%c]") then return "/" end
  return s
end

---------------------------------------------------------------------------
-- the application
---------------------------------------------------------------------------

local App = {}
App.__index = App

--- The dashboard.  opts: api (a scheduler instance), database (the label
-- to show, password masked), secrets (strings masked out of every error),
-- read_only, token (nil: no sign-in), hosts (a set of accepted Host headers;
-- nil: any), secret (the HMAC key; default: 32 random bytes), metrics (a
-- function(api) returning the /metrics text; default: scheduler.metrics's
-- render when that module exists).
function web.app(opts)
  local self = setmetatable({}, App)
  self.api = assert(opts.api, "web.app: api is required")
  self.database = opts.database or ""
  self.secrets = opts.secrets or {}
  self.read_only = opts.read_only and true or false
  self.token = opts.token
  self.hosts = opts.hosts
  self.secret = opts.secret or require("openssl.rand").bytes(32)
  self.metrics = opts.metrics or nil -- (false: none)
  if opts.metrics == nil then
    local ok, m = pcall(require, "scheduler.metrics")
    if ok and type(m) == "table" and m.render then self.metrics = m.render end
  end
  return self
end

local SECURITY_HEADERS = {
  { "content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    .. "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" },
  { "x-content-type-options", "nosniff" },
  { "x-frame-options", "DENY" },
  -- (not no-referrer: Chromium then sends "Origin: null" with the page's own
  -- form posts, which the Origin check must refuse; make test-web saw it)
  { "referrer-policy", "same-origin" },
  { "cache-control", "no-store" },
}

local function response(status, body, ctype, extra)
  local h = { { "content-type", ctype or "text/html; charset=utf-8" } }
  for _, kv in ipairs(SECURITY_HEADERS) do h[#h + 1] = kv end
  for _, kv in ipairs(extra or {}) do h[#h + 1] = kv end
  return { status = status, headers = h, body = body }
end

local function cookie(name, value, max_age)
  return { "set-cookie", ("%s=%s; Path=/; HttpOnly; SameSite=Strict%s"):format(name, value,
    max_age and ("; Max-Age=" .. max_age) or "") }
end

function App:flash_sig(sid, msg)
  return hmac(self.secret, "flash:" .. sid .. ":" .. msg):sub(1, 32)
end

function App:csrf_of(sid)
  return hmac(self.secret, "csrf:" .. sid)
end

--- Whether the request carries the token: Authorization Bearer or Basic
-- (any user, the token as password), or the session's sign-in cookie.
function App:authorized(req, sid)
  if not self.token then return true end
  local auth = req.headers.authorization
  if auth then
    local bearer = auth:match("^[Bb]earer%s+(%S+)%s*$")
    if bearer and same(bearer, self.token) then return true end
    local basic = auth:match("^[Bb]asic%s+(%S+)%s*$")
    if basic then
      local pass = decode_base64(basic):match("^[^:]*:(.*)$")
      if pass and same(pass, self.token) then return true end
    end
  end
  local signed = req.cookies.lauth
  return signed ~= nil and same(signed, hmac(self.secret, "auth:" .. sid))
end

--- Why a POST is refused as cross-site (nil: it is not).
function App:cross_site(req, form, sid)
  local origin = req.headers.origin
  local host = req.headers.host or ""
  -- (https: behind a reverse proxy that terminates TLS and passes the Host)
  if origin and origin ~= "null" and origin ~= ("http://" .. host) and origin ~= ("https://" .. host) then
    return "cross-origin request (Origin " .. origin .. ")"
  end
  if origin == "null" then return "cross-origin request (Origin null)" end
  local site = req.headers["sec-fetch-site"]
  if site and site ~= "same-origin" and site ~= "none" then
    return "cross-site request (Sec-Fetch-Site " .. site .. ")"
  end
  if not same(form.csrf, self:csrf_of(sid)) then return "missing or wrong CSRF token" end
  return nil
end

--- A database failure as a page: 503, the error with secrets masked.
function App:failed(ctx, what, err)
  local msg = mask(errors_strip(err), self.secrets)
  ctx.title = "Error"
  return response(503, html.page(ctx, '<h1>Database error</h1><p class="flash error" id="db-error">'
    .. html.text(what .. ": " .. msg) .. '</p>'))
end

local function refused(ctx, why)
  ctx.title = "Forbidden"
  return response(403, html.page(ctx, '<h1>Forbidden</h1><p class="flash error" id="forbidden">'
    .. html.text(why) .. '</p>'), nil, ctx.cookies)
end

--- Whether job j matches search text q (lower case): its name, key or
-- payload (as JSON text) contains it.
local function matches(j, q)
  if j.name:lower():find(q, 1, true) then return true end
  if j.key and j.key:lower():find(q, 1, true) then return true end
  if j.payload ~= nil then
    local ok, s = pcall(require("scheduler.core").json_encode, j.payload)
    if ok and s:lower():find(q, 1, true) then return true end
  end
  if j.payload_text and j.payload_text:lower():find(q, 1, true) then return true end
  return false
end

--- The failed jobs (of name), grouped by fingerprint: groups sorted by
-- size, and whether the scan reached its limit.
function App:groups(name)
  local jobs, err = self.api:jobs { state = "failed", name = name, limit = web.SCAN_LIMIT + 1 }
  if not jobs then return nil, err end
  local cut = #jobs > web.SCAN_LIMIT
  if cut then jobs[#jobs] = nil end
  local by, list = {}, {}
  for _, j in ipairs(jobs) do
    local fp = html.fingerprint(j.last_error)
    local g = by[fp]
    if not g then
      g = { id = html.group_id(fp), fingerprint = fp, count = 0, names = {}, jobs = {}, example = j,
        last = j.run_at }
      by[fp] = g
      list[#list + 1] = g
    end
    g.count = g.count + 1
    g.jobs[#g.jobs + 1] = j
    g.names[j.name] = (g.names[j.name] or 0) + 1
    if j.run_at and (not g.last or j.run_at > g.last) then g.last, g.example = j.run_at, j end
  end
  table.sort(list, function(a, b) return a.count > b.count or (a.count == b.count and a.fingerprint < b.fingerprint) end)
  return list, cut
end

---------------------------------------------------------------------------
-- pages (GET)
---------------------------------------------------------------------------

local GET = {}

GET["/"] = function(self, ctx)
  local rows, err = self.api:stats()
  if not rows then return self:failed(ctx, "stats", err) end
  ctx.title, ctx.nav, ctx.live = "Overview", "overview", true
  return response(200, html.page(ctx, html.overview(ctx, rows)), nil, ctx.cookies)
end

GET["/jobs"] = function(self, ctx, req)
  local q = req.query
  local f = { state = q.state ~= "" and q.state or nil, name = q.name ~= "" and q.name or nil,
    q = q.q ~= "" and q.q or nil, group = q.group ~= "" and q.group or nil }
  local valid = { scheduled = true, running = true, failed = true, done = true, cancelled = true }
  if f.state and not valid[f.state] then f.state = nil end
  if f.name and (not utf8.len(f.name) or f.name:find("%z")) then f.name = nil end
  if f.group then f.state = "failed" end
  local filtering = f.q or f.group
  local limit = filtering and web.SCAN_LIMIT or web.LIST_LIMIT
  local jobs, now = self.api:jobs { state = f.state, name = f.name, limit = limit + 1 }
  if not jobs then return self:failed(ctx, "jobs", now) end
  local note
  if filtering then
    if #jobs > limit then
      jobs[#jobs] = nil
      note = ("Searched the first %d jobs only."):format(limit)
    end
    local needle = f.q and f.q:lower()
    local kept = {}
    for _, j in ipairs(jobs) do
      if (not needle or matches(j, needle))
        and (not f.group or html.group_id(html.fingerprint(j.last_error)) == f.group) then
        kept[#kept + 1] = j
      end
    end
    jobs = kept
  end
  local more
  if #jobs > web.LIST_LIMIT then
    for i = #jobs, web.LIST_LIMIT + 1, -1 do jobs[i] = nil end
    more = ("Only the first %d jobs are shown: narrow the search."):format(web.LIST_LIMIT)
  end
  if f.group then
    note = (note and (note .. " ") or "") .. "Failed jobs of one error group (see Failed by error)."
  end
  ctx.title, ctx.nav, ctx.live = "Jobs", "jobs", true
  return response(200, html.page(ctx, html.jobs(ctx, f, jobs, now, more, note)), nil, ctx.cookies)
end

GET["/failed"] = function(self, ctx, req)
  local name = req.query.name
  if name == "" or (name and not utf8.len(name)) then name = nil end
  local groups, cut = self:groups(name)
  if not groups then return self:failed(ctx, "jobs", cut) end
  ctx.title, ctx.nav, ctx.live = "Failed by error", "failed", true
  local note = cut and ("Grouped the first %d failed jobs only."):format(web.SCAN_LIMIT) or nil
  return response(200, html.page(ctx, html.groups(ctx, groups, { name = name }, note)), nil, ctx.cookies)
end

GET["/login"] = function(self, ctx)
  ctx.title = "Sign in"
  return response(200, html.page(ctx, html.login(ctx)), nil, ctx.cookies)
end

local function job_page(self, ctx, id)
  local j, err = self.api:job(id)
  if err then return self:failed(ctx, "job", err) end
  ctx.title, ctx.nav = "Job " .. id, "jobs"
  if not j then
    return response(404, html.page(ctx, ('<h1>Job %d</h1><p class="empty">No job %d: it finished (and history'
      .. ' does not keep it), was cancelled, or never existed.</p>'):format(id, id)), nil, ctx.cookies)
  end
  -- the queue's row: its own max_attempts (nil when it sets none), and the clock
  local rows, now = self.api:jobs { id = id, limit = 1 }
  if rows and rows[1] and rows[1].id == id then j.max_attempts = rows[1].max_attempts end
  ctx.live = j.state == "scheduled" or j.state == "running"
  return response(200, html.page(ctx, html.job(ctx, j, tonumber(now))), nil, ctx.cookies)
end

---------------------------------------------------------------------------
-- actions (POST)
---------------------------------------------------------------------------

local POST = {}

--- Why retry/cancel/delete did nothing to job id, from its state now.
local function explain(self, id, verb)
  local j = self.api:job(id)
  if not j then return ("no job %d (it finished, was cancelled, or never existed)"):format(id) end
  return ("job %d is %s: not %s"):format(id, j.state, verb)
end

local JOB_ACTIONS = {
  retry = { "retry", "failed, so it was not retried", "job %d will run now" },
  cancel = { "cancel", "waiting, so it was not cancelled", "cancelled job %d" },
  delete = { "delete", "failed or waiting, so it was not deleted", "deleted job %d" },
}

local function job_action(self, id, verb)
  local a = JOB_ACTIONS[verb]
  local done, err = self.api[a[1]](self.api, id)
  if done == nil then return "error:" .. mask(errors_strip(err), self.secrets) end
  if not done then return "error:" .. explain(self, id, a[2]) end
  return "ok:" .. a[3]:format(id)
end

POST["/names/retry-failed"] = function(self, form)
  local name = form.name
  if not name or name == "" or not utf8.len(name) then return "error:no job name given" end
  local retried, skipped = self.api:retry_failed { name = name }
  if retried == nil then return "error:" .. mask(errors_strip(skipped), self.secrets) end
  return ("ok:retried %d failed job%s of %s%s"):format(retried, retried == 1 and "" or "s", html.utf8(name),
    skipped > 0 and (" (%d kept: another unfinished job holds its key)"):format(skipped) or "")
end

-- Pause or resume a name (store.h, pause): every worker, durably.
local function pause_action(self, form, verb)
  local name = form.name
  if not name or name == "" or not utf8.len(name) then return "error:no job name given" end
  local ok, changed, err = pcall(self.api[verb], self.api, name) -- (a name it refuses raises)
  if not ok then changed, err = nil, changed end
  if changed == nil then return "error:" .. mask(errors_strip(tostring(err)), self.secrets) end
  local what = verb == "pause" and "paused" or "resumed"
  if not changed then return ("ok:%s was already %s"):format(html.utf8(name), what) end
  return ("ok:%s %s%s"):format(what, html.utf8(name), verb == "pause" and
    ": no job of it starts (the ones running finish)" or "")
end

POST["/names/pause"] = function(self, form) return pause_action(self, form, "pause") end
POST["/names/resume"] = function(self, form) return pause_action(self, form, "resume") end

local function group_action(self, form, verb)
  local id = form.group
  if not id or not id:match("^%x+$") then return "error:no error group given" end
  local name = form.name ~= "" and form.name or nil
  if name and not utf8.len(name) then return "error:bad name" end
  local groups, cut = self:groups(name)
  if not groups then return "error:" .. mask(errors_strip(cut), self.secrets) end
  local group
  for _, g in ipairs(groups) do if g.id == id then group = g end end
  if not group then return "error:no failed job has that error any more" end
  local n, gone = 0, 0
  for _, j in ipairs(group.jobs) do
    local done, err
    if verb == "retry" then done, err = self.api:retry(j.id) else done, err = self.api:delete(j.id) end
    if done == nil then return "error:" .. mask(errors_strip(err), self.secrets) end
    if done then n = n + 1 else gone = gone + 1 end
  end
  return ("ok:%s %d failed job%s%s"):format(verb == "retry" and "retried" or "discarded", n, n == 1 and "" or "s",
    gone > 0 and (" (%d no longer failed)"):format(gone) or "")
end

POST["/groups/retry"] = function(self, form) return group_action(self, form, "retry") end
POST["/groups/discard"] = function(self, form) return group_action(self, form, "discard") end

---------------------------------------------------------------------------
-- dispatch
---------------------------------------------------------------------------

--- The response to req: { status, headers = { {name, value}, ... }, body }.
-- req: { method, path (without the query), query (table), headers (table,
-- lower-case names), cookies (table), body (string or nil) }.
function App:handle(req)
  req.query = req.query or {}
  req.headers = req.headers or {}
  req.cookies = req.cookies or web.parse_cookies(req.headers.cookie)
  local path, method = req.path, req.method
  -- back: where the page's actions return (the page itself, with its query)
  local ctx = { database = self.database, read_only = self.read_only, cookies = {},
    metrics = self.metrics ~= nil, back = safe_back(req.target or path) }

  if self.hosts and not self.hosts[req.headers.host or ""] then
    return refused(ctx, "unknown Host: this dashboard answers only to the address it listens on")
  end
  local asset = path:match("^/static/([%w%.%-]+)$")
  if asset and assets[asset] and assets.types[asset] then
    if method ~= "GET" and method ~= "HEAD" then return response(405, "", "text/plain") end
    local r = response(200, assets[asset], assets.types[asset])
    for i, kv in ipairs(r.headers) do
      if kv[1] == "cache-control" then r.headers[i] = { "cache-control", "max-age=300" } end
    end
    return r
  end

  -- the session: a random cookie; its CSRF token derives from it
  local sid = req.cookies.lsid
  if not (sid and sid:match("^%x+$") and #sid == 32) then
    sid = random_hex(16)
    ctx.cookies[#ctx.cookies + 1] = cookie("lsid", sid)
  end
  ctx.csrf = self:csrf_of(sid)
  -- the message of the last action, signed for this session: cookies are
  -- shared by every port of a host, so another service on 127.0.0.1 could
  -- set one (it shows escaped anyway, but must not pass for ours)
  local flash = req.cookies.lflash
  if flash and flash ~= "" then
    local msg, sig = flash:match("^(.*)%.(%x+)$")
    if msg and same(sig, self:flash_sig(sid, msg)) then ctx.flash = url_decode(msg) end
    ctx.cookies[#ctx.cookies + 1] = cookie("lflash", "", 0)
  end

  local form = {}
  if method == "POST" then
    local ctype = req.headers["content-type"] or ""
    if not ctype:match("^application/x%-www%-form%-urlencoded") then
      return refused(ctx, "actions take a form (application/x-www-form-urlencoded)")
    end
    form = web.parse_query(req.body or "")
    local why = self:cross_site(req, form, sid)
    if why then return refused(ctx, why) end
  end

  if not self:authorized(req, sid) then
    if path == "/login" and method == "POST" then
      if same(form.token or "", self.token) then
        -- a new session on sign-in: a session id someone else chose (set
        -- from another port of the host) is not the one signed in
        local fresh = random_hex(16)
        return response(303, "", "text/plain", { { "location", "/" }, cookie("lsid", fresh),
          cookie("lauth", hmac(self.secret, "auth:" .. fresh)) })
      end
      ctx.title = "Sign in"
      return response(403, html.page(ctx, html.login(ctx, true)), nil, ctx.cookies)
    end
    if path == "/login" and method == "GET" then return GET["/login"](self, ctx, req) end
    if path == "/metrics" then return response(403, "forbidden: sign in or send the token\n", "text/plain") end
    ctx.title = "Sign in"
    return response(403, html.page(ctx, html.login(ctx)), nil, ctx.cookies)
  end

  if method == "GET" or method == "HEAD" then
    if path == "/metrics" then
      if not self.metrics then return response(404, "no metrics module (scheduler.metrics)\n", "text/plain") end
      local ok, body = pcall(self.metrics, self.api)
      if not ok or type(body) ~= "string" then
        return response(503, "metrics: " .. mask(errors_strip(body), self.secrets) .. "\n", "text/plain")
      end
      return response(200, body, "text/plain; version=0.0.4; charset=utf-8")
    end
    if path == "/login" then -- (signed in already, or no token)
      return response(303, "", "text/plain", { { "location", "/" }, table.unpack(ctx.cookies) })
    end
    local id = path:match("^/jobs/(%d+)$")
    id = id and math.tointeger(tonumber(id))
    if id and id >= 1 then return job_page(self, ctx, id) end
    local h = GET[path]
    if h then return h(self, ctx, req) end
    ctx.title = "Not found"
    return response(404, html.page(ctx, '<h1>Not found</h1>'), nil, ctx.cookies)
  end

  if method ~= "POST" then return response(405, "method not allowed\n", "text/plain", { { "allow", "GET, POST" } }) end
  if path == "/login" then -- (signed in already)
    return response(303, "", "text/plain", { { "location", "/" }, table.unpack(ctx.cookies) })
  end
  if self.read_only then return refused(ctx, "read-only dashboard: actions are refused") end
  local result
  local id, verb = path:match("^/jobs/(%d+)/(%a+)$")
  id = id and math.tointeger(tonumber(id))
  if id and JOB_ACTIONS[verb] then
    result = job_action(self, id, verb)
  elseif POST[path] then
    result = POST[path](self, form)
  else
    ctx.title = "Not found"
    return response(404, html.page(ctx, '<h1>Not found</h1>'), nil, ctx.cookies)
  end
  local headers = { { "location", safe_back(form.back) } }
  for _, c in ipairs(ctx.cookies) do headers[#headers + 1] = c end
  -- (a cookie holds 4 KB: a long name is cut)
  local shown = #result > 300 and (html.utf8(result:sub(1, 297)) .. "...") or result
  local msg = html.urlencode(shown)
  headers[#headers + 1] = cookie("lflash", msg .. "." .. self:flash_sig(sid, msg))
  return response(303, "", "text/plain", headers), result
end

---------------------------------------------------------------------------
-- the server
---------------------------------------------------------------------------

--- "127.0.0.1:8080", "[::1]:8080", "localhost:8080", ":8080" -> host, port;
-- or nil, why.
function web.parse_listen(s)
  local host, port = s:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  if not host then return nil, "expected HOST:PORT (like 127.0.0.1:8080 or [::1]:8080)" end
  if host == "" then host = "0.0.0.0" end
  port = tonumber(port)
  if port > 65535 then return nil, "the port must be 0 to 65535" end
  return host, port
end

--- Whether the address is loopback only (127.0.0.0/8, ::1, localhost).
function web.is_loopback(host)
  return host == "localhost" or host == "::1" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

--- The Host headers a loopback dashboard on `port` answers to.
function web.loopback_hosts(host, port)
  local hosts = {}
  for _, h in ipairs { "127.0.0.1", "localhost", "[::1]", host:find(":") and ("[" .. host .. "]") or host } do
    hosts[h .. ":" .. port] = true
    if port == 80 then hosts[h] = true end
  end
  return hosts
end

local function read_body(stream)
  local parts, size = {}, 0
  while true do
    local chunk, err = stream:get_next_chunk(10)
    if not chunk then
      if err then return nil, err end
      break
    end
    size = size + #chunk
    if size > web.BODY_LIMIT then return nil, "too large" end
    parts[#parts + 1] = chunk
  end
  return concat(parts)
end

--- Serve the dashboard until SIGINT/SIGTERM.  opts: those of web.app plus
-- listen ("HOST:PORT"), log (function(line), default: stderr), on_ready
-- (function(url), called once listening).
function web.serve(opts)
  use_lua_http()
  local cqueues = require "cqueues"
  local signal = require "cqueues.signal"
  local http_server = require "http.server"
  local http_headers = require "http.headers"
  local host, port = web.parse_listen(opts.listen or "127.0.0.1:8080")
  local log = opts.log or function(line) io.stderr:write(line, "\n") end
  local secrets = opts.secrets or {}
  local app
  local bound

  local function onstream(_, stream)
    local rh = stream:get_headers()
    if not rh then return end
    local t0 = cqueues.monotime()
    local headers = {}
    for k, v in rh:each() do
      if headers[k] == nil then headers[k] = v end
    end
    local method, full = headers[":method"], headers[":path"] or "/"
    headers.host = headers.host or headers[":authority"]
    local path, query = full:match("^([^?]*)%??(.*)$")
    local body
    local res
    if method == "POST" then
      local err
      body, err = read_body(stream)
      if not body then res = response(413, "request body: " .. tostring(err) .. "\n", "text/plain") end
    end
    if not res then
      local ok, r = pcall(app.handle, app, { method = method, path = path, target = full, query = web.parse_query(query),
        headers = headers, body = body })
      if ok then
        res = r
      else
        log("lua-scheduler web: internal error: " .. mask(r, secrets))
        res = response(500, "internal error (see the server's log)\n", "text/plain")
      end
    end
    local h = http_headers.new()
    h:append(":status", tostring(res.status))
    for _, kv in ipairs(res.headers) do h:append(kv[1], kv[2]) end
    local bodytext = method == "HEAD" and "" or res.body
    h:append("content-length", tostring(#bodytext))
    local ok = stream:write_headers(h, #bodytext == 0)
    if ok and #bodytext > 0 then stream:write_chunk(bodytext, true) end
    log(("%s %s %d %.0fms"):format(method, text.cell(html.utf8(mask(full, secrets)), 120), res.status,
      (cqueues.monotime() - t0) * 1000))
  end

  local server = assert(http_server.listen {
    host = host, port = port, tls = false, reuseaddr = true, onstream = onstream,
    onerror = function(_, context, op, err)
      log(("lua-scheduler web: %s on %s: %s"):format(tostring(op), tostring(context), mask(err, secrets)))
    end,
  })
  local ok, err = server:listen()
  if not ok then return nil, err end
  local _, _, p = server:localname()
  bound = p
  local app_opts = {}
  for k, v in pairs(opts) do app_opts[k] = v end
  if not opts.token and app_opts.hosts == nil then app_opts.hosts = web.loopback_hosts(host, bound) end
  app = web.app(app_opts)
  local shown = host:find(":") and ("[" .. host .. "]") or host
  local url = ("http://%s:%d/"):format(shown, bound)
  if opts.on_ready then opts.on_ready(url) end

  signal.block(signal.SIGTERM, signal.SIGINT)
  local signals = signal.listen(signal.SIGTERM, signal.SIGINT)
  local cq = cqueues.new()
  cq:wrap(function() assert(server:loop()) end)
  cq:wrap(function()
    signals:wait()
    server:close()
  end)
  local lok, lerr = cq:loop()
  if not lok then return nil, lerr end
  return true
end

return web
