-- make test-web: the web dashboard (lua-scheduler web) driven in headless
-- Chromium through chromedriver (W3C WebDriver over HTTP, spoken here with
-- lua-http's client), against the real database `make test-web` starts and
-- real workers (lua-scheduler run).
--
--   lua5.4 webtest/run.lua [--out DIR]      (DIR: build/web-screenshots)
--
-- It clicks through the overview, the job lists, a search, a job's detail,
-- retry, cancel, a group retry and discard, retry all failed of a name;
-- checks that hostile names, payloads and errors render as text (no alert,
-- no script ran, the markup visible as characters); that a cross-site
-- form, a missing or wrong CSRF token, another Origin and a wrong Host get
-- 403; that --token refuses pages without it and --read-only refuses every
-- action; and saves a screenshot of each page.  Every execution is counted
-- by an independent record: the listeners append a line per run to a file.
-- Exit 0 when every check passed, 1 otherwise.  Everything it starts
-- (workers, web servers, chromedriver and its browser) it stops by pid.

local ROOT = (arg[0]:match("^(.*)/webtest/[^/]*$")) or "."
package.path = ROOT .. "/lua/?.lua;" .. package.path
package.cpath = ROOT .. "/build/?.so;" .. package.cpath
local web = require "scheduler.web"
web.use_lua_http()
local core = require "scheduler.core"
local scheduler = require "scheduler"
local http_request = require "http.request"
local cqueues = require "cqueues"

local TMP -- the test's temporary directory
local OUT = ROOT .. "/build/web-screenshots"
for i = 1, #arg do if arg[i] == "--out" then OUT = arg[i + 1] end end

local T0 = scheduler.now()
local BIN = ROOT .. "/bin/lua-scheduler"
local LUA = os.getenv("LUA") or "lua5.4"
local failures, checks = 0, 0
local pids = {}

local function log(fmt, ...)
  io.stdout:write(("[%5.1fs] "):format(scheduler.now() - T0), fmt:format(...), "\n")
  io.stdout:flush()
end

local function check(ok, what)
  checks = checks + 1
  if ok then
    log("ok    %s", what)
  else
    failures = failures + 1
    log("FAIL  %s", what)
  end
  return ok
end

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function sleep(s) cqueues.sleep(s) end

local function wait_for(pred, timeout, what)
  local deadline = scheduler.now() + (timeout or 10)
  while true do
    local v = pred()
    if v then return v end
    if scheduler.now() > deadline then
      if what then log("timed out waiting for %s", what) end
      return nil
    end
    sleep(0.1)
  end
end

--- Start cmd in the background (its own process group); stdout and
-- stderr to files; returns the pid, remembered for the cleanup.
local function spawn(cmd, name)
  local out, err = TMP .. "/" .. name .. ".out", TMP .. "/" .. name .. ".err"
  local pid = tonumber((sh(("setsid sh -c %s > %s 2> %s < /dev/null & echo $!"):format(
    q("exec " .. cmd), q(out), q(err))):match("%d+")))
  pids[#pids + 1] = { pid = pid, name = name }
  return pid, out, err
end

--- Stop what spawn started: SIGTERM to each process group (the
-- supervisor of `run` stops its workers, each in a group of its own, and
-- the browser goes with chromedriver's group), SIGKILL to what is left
-- after 5 s.  (No "--" before the group: dash's kill takes none.)
-- Returns the names of the processes that had to be killed.
local function stop_all()
  for i = #pids, 1, -1 do
    os.execute(("kill -TERM -%d 2>/dev/null"):format(pids[i].pid))
  end
  local deadline, killed = scheduler.now() + 5, {}
  for i = #pids, 1, -1 do
    local p = pids[i]
    while scheduler.now() < deadline and os.execute(("kill -0 %d 2>/dev/null"):format(p.pid)) do sleep(0.05) end
    if os.execute(("kill -0 %d 2>/dev/null"):format(p.pid)) then killed[#killed + 1] = p.name end
    os.execute(("kill -KILL -%d 2>/dev/null"):format(p.pid))
    pids[i] = nil
  end
  return killed
end

local function free_port()
  local socket = require "cqueues.socket"
  local s = assert(socket.listen("127.0.0.1", 0))
  s:listen()
  local _, _, port = s:localname()
  s:close()
  return port
end

---------------------------------------------------------------------------
-- HTTP (for the WebDriver protocol and the status-code checks)
---------------------------------------------------------------------------

--- method, url, body (string or nil), headers (table) -> status, body, headers
local function http(method, url, body, headers)
  local req = http_request.new_from_uri(url)
  req.headers:upsert(":method", method)
  req.follow_redirects = false
  req.cookie_store = false -- (the cookies a check sends are its own)
  for k, v in pairs(headers or {}) do req.headers:upsert(k, v) end
  if body then req:set_body(body) end
  local h, stream = req:go(30)
  if not h then return nil, tostring(stream) end
  local b = stream:get_body_as_string(30) or ""
  return tonumber(h:get(":status")), b, h
end

local function json(v) return core.json_encode(v) end
local function unjson(s)
  local v, err = core.json_decode(s)
  if err then error("bad JSON from chromedriver: " .. err .. ": " .. s:sub(1, 200)) end
  return v
end

---------------------------------------------------------------------------
-- WebDriver
---------------------------------------------------------------------------

local WD, SESSION
local ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

local function wd(method, path, body)
  if type(body) == "table" then body = json(body) end
  local status, b = http(method, WD .. path, body or (method == "POST" and "{}" or nil),
    { ["content-type"] = "application/json" })
  if not status then error("chromedriver: " .. tostring(b)) end
  local v = unjson(b)
  return status, v.value
end

local function s_(path) return "/session/" .. SESSION .. path end

local function go(url)
  local st, v = wd("POST", s_("/url"), { url = url })
  if st ~= 200 then error("navigate " .. url .. ": " .. json(v)) end
end

local function find(css)
  local st, v = wd("POST", s_("/elements"), { using = "css selector", value = css })
  if st ~= 200 then error("find " .. css .. ": " .. json(v)) end
  local ids = {}
  for i, e in ipairs(v) do ids[i] = e[ELEMENT] end
  return ids
end

local function one(css, timeout)
  return wait_for(function() return find(css)[1] end, timeout or 5, css)
end

local function click(el)
  local st, v = wd("POST", s_("/element/" .. el .. "/click"), {})
  if st ~= 200 then error("click: " .. json(v)) end
end

local function text_of(el)
  local _, v = wd("GET", s_("/element/" .. el .. "/text"))
  return v
end

local function type_into(el, s)
  wd("POST", s_("/element/" .. el .. "/clear"), {})
  local st, v = wd("POST", s_("/element/" .. el .. "/value"), { text = s })
  if st ~= 200 then error("type: " .. json(v)) end
end

local function attr(el, name)
  local _, v = wd("GET", s_("/element/" .. el .. "/attribute/" .. name))
  return v
end

--- The body of an execute call: its arguments always a JSON array (the
-- codec writes an empty table as {}).
local function script_body(script, ...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = json(a) end
  return '{"script":' .. json(script) .. ',"args":[' .. table.concat(args, ",") .. "]}"
end

local function js(script, ...)
  local st, v = wd("POST", s_("/execute/sync"), script_body(script, ...))
  if st ~= 200 then error("script: " .. json(v)) end
  return v
end

local function js_async(script, ...)
  local st, v = wd("POST", s_("/execute/async"), script_body(script, ...))
  if st ~= 200 then error("async script: " .. json(v)) end
  return v
end

--- Whether an alert (or confirm, prompt) is open: an XSS would open one.
local function alert_open()
  local st = wd("GET", s_("/alert/text"))
  return st == 200
end

local B64 = {}
do
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[chars:byte(i)] = i - 1 end
end
local function unbase64(s)
  local out, n = {}, 0
  s = s:gsub("[^%w%+/]", "")
  for i = 1, #s, 4 do
    local a, b, c, d = B64[s:byte(i)], B64[s:byte(i + 1)], B64[s:byte(i + 2) or 0], B64[s:byte(i + 3) or 0]
    local v = (a << 18) | ((b or 0) << 12) | ((c or 0) << 6) | (d or 0)
    n = n + 1
    out[n] = string.char(v >> 16 & 255) .. (c and string.char(v >> 8 & 255) or "") .. (d and string.char(v & 255) or "")
  end
  return table.concat(out)
end

local function screenshot(name)
  local _, v = wd("GET", s_("/screenshot"))
  local png = unbase64(v)
  write(OUT .. "/" .. name .. ".png", png)
  log("saved %s/%s.png (%d bytes)", OUT, name, #png)
end

local function page_text() return text_of(one("body")) end

local function title() local _, v = wd("GET", s_("/title")) return v end

--- No alert is open and no injected script ran (window.__xss unset).
local function inert(where)
  check(not alert_open(), where .. ": no alert opened")
  check(js("return window.__xss === undefined") == true, where .. ": no injected script ran")
end

---------------------------------------------------------------------------
-- the setup
---------------------------------------------------------------------------

TMP = sh("mktemp -d /tmp/lua-scheduler-web.XXXXXX"):gsub("%s+$", "")
local RECORD = TMP .. "/record"
local STOP = TMP .. "/stop-slow"
os.execute("mkdir -p " .. q(OUT) .. " " .. q(TMP .. "/listeners") .. " " .. q(TMP .. "/chrome"))
os.execute("rm -f " .. q(OUT) .. "/*.png")
local DB = os.getenv("LUA_SCHEDULER_DATABASE")
if not DB then io.stderr:write("webtest: LUA_SCHEDULER_DATABASE is not set (make test-web sets it)\n") os.exit(2) end

-- hostile fields: an alert or a window.__xss assignment if any of them ran
local EVIL_NAME = "<script>window.__xss=1</script>Evil"
local EVIL_PAYLOAD = { html = [["><img src=x onerror="window.__xss=2;alert(2)">]], bad = "'\"</pre><b>" }
local EVIL_ERROR = [[<img src=x onerror="window.__xss=3;alert(3)"> failed ']]

write(TMP .. "/listeners/web.lua", ([=[
local scheduler = require "scheduler"
local RECORD, STOP = %q, %q
-- the independent record: one line per execution, appended by the listener
local function record(job)
  local f = assert(io.open(RECORD, "a"))
  f:write(job.name:gsub("\n", " "), " ", job.id, " ", job.attempt, "\n")
  f:close()
end
local keep = { history = "1h" }
scheduler.on("WebOk", function(_, job) record(job) end, keep)
scheduler.on("WebCharge", function(p, job)
  record(job)
  if p.fail then error(("charge %%d failed for %%q (id %%s)"):format(p.amount, p.user, p.ref)) end
end, { max_attempts = 1, history = "1h" })
scheduler.on("WebTimeout", function(p, job)
  record(job)
  error(("timeout after %%d ms talking to 10.0.0.%%d"):format(p.ms, p.host))
end, { max_attempts = 1, history = "1h" })
scheduler.on(%q, function(_, job)
  record(job)
  error(%q)
end, { max_attempts = 1, history = "1h" })
scheduler.on("WebSlow", function(_, job)
  record(job)
  for _ = 1, 300 do
    local f = io.open(STOP, "r")
    if f then f:close() return end
    os.execute("sleep 0.1")
  end
end, keep)
scheduler.on("WebLater", function(_, job) record(job) end, keep)
]=]):format(RECORD, STOP, EVIL_NAME, EVIL_ERROR))

local function ran(name, id)
  local n = 0
  for line in (read(RECORD) or ""):gmatch("[^\n]+") do
    local nm, i = line:match("^(.-) (%d+) %d+$")
    if nm == name and (not id or tonumber(i) == id) then n = n + 1 end
  end
  return n
end

-- everything from here runs protected: whatever fails, what was started is stopped
local s
local ok, err = xpcall(function()
s = scheduler.new { database = DB }
assert(s:schema_version())
local function sched(name, payload, when)
  local id, err = s:schedule(name, payload, when)
  assert(id, err)
  return id
end
-- fresh names each run would need the listener file to know them: the
-- database of make test-web is fresh, these are its only jobs
local charge_fail, charge_ok, timeouts, later = {}, {}, {}, {}
for i = 1, 4 do
  charge_fail[i] = sched("WebCharge", { fail = true, amount = 100 * i + i, user = "user" .. i .. "@example.com",
    ref = ("%08x"):format(0xa1b2c3 * i) })
end
for i = 1, 3 do charge_ok[i] = sched("WebCharge", { fail = false, amount = i, user = "ok" .. i }) end
for i = 1, 3 do timeouts[i] = sched("WebTimeout", { ms = 250 * i, host = i }) end
local evil = sched(EVIL_NAME, EVIL_PAYLOAD, { key = [[key"><script>window.__xss=4</script>]] })
for i = 1, 5 do sched("WebOk", { n = i }) end
local slow = sched("WebSlow", { what = "blocks until the test ends" })
for i = 1, 3 do later[i] = sched("WebLater", { invoice = "INV-" .. (4000 + i) }, { delay = 3600 }) end

local FAILED = #charge_fail + #timeouts + 1
local workers = spawn(("%s %s run --workers 2 --log-level warn --stop-timeout 2 %s"):format(LUA, BIN, q(TMP .. "/listeners")),
  "workers")
log("workers: pid %d", workers)

local function failed_count()
  local rows = s:jobs { state = "failed" }
  return rows and #rows or 0
end
check(wait_for(function() return failed_count() == FAILED and ran("WebSlow") == 1 end, 30, "the jobs to fail"),
  ("the workers ran the jobs: %d failed, the slow one running"):format(FAILED))

-- the web servers: the dashboard, a read-only one, one with a token
local function start_web(name, args)
  local _, out = spawn(("%s %s web --listen 127.0.0.1:0 %s"):format(LUA, BIN, args or ""), name)
  local url = wait_for(function() return (read(out) or ""):match("listening on (http://%S+/)") end, 10, name)
  assert(url, name .. " did not start: " .. (read(TMP .. "/" .. name .. ".err") or ""))
  log("%s: %s", name, url)
  return url:gsub("/$", "")
end
local URL = start_web("web")
local RO = start_web("web-ro", "--read-only")
local TOKEN = "test-token-" .. ("%x"):format(math.random(1 << 30))
-- the token dashboard connects with a password (the cluster's password
-- role, over TCP, given on the command line): it must reach no page, no
-- log, no error, and leave the command line
local TCP_URL, PASSWORD = os.getenv("PGTMP_TCP_URL"), os.getenv("PGTMP_PASSWORD")
local PWROLE = TCP_URL and TCP_URL:match("^postgresql://([^:]+):")
local function psql(sql)
  local _, okq = sh(("%s/psql -X -q -v ON_ERROR_STOP=1 -c %s 2>&1"):format(os.getenv("PGTMP_BIN") or "", q(sql)))
  return okq
end
if PWROLE then
  assert(psql(("GRANT USAGE ON SCHEMA scheduler TO %s; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"
    .. " IN SCHEMA scheduler TO %s; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA scheduler TO %s"):format(
    PWROLE, PWROLE, PWROLE)), "granting the password role")
end
local TK = start_web("web-token", "--token " .. TOKEN .. (PWROLE and (" --database " .. q(TCP_URL)) or ""))

-- the other site of the CSRF check
local EVIL
do
  local _, out = spawn(("%s %s"):format(LUA, q(ROOT .. "/webtest/attacker.lua")), "attacker")
  EVIL = wait_for(function() return (read(out) or ""):match("listening on (http://%S+/)") end, 10, "attacker")
  assert(EVIL, "the attacker's server did not start: " .. (read(TMP .. "/attacker.err") or ""))
end

-- refused at start: another address than loopback without a token
local _, okstart, code = sh(("%s %s web --listen 0.0.0.0:0 2>&1"):format(LUA, BIN))
check(not okstart and code == 2, "web --listen 0.0.0.0 without --token is refused (exit 2)")

-- chromedriver, and a headless Chromium session
local wdport = free_port()
spawn(("chromedriver --port=%d"):format(wdport), "chromedriver")
WD = ("http://127.0.0.1:%d"):format(wdport)
assert(wait_for(function()
  local st = http("GET", WD .. "/status")
  return st == 200
end, 15, "chromedriver"), "chromedriver did not start")
do
  local st, v = wd("POST", "/session", { capabilities = { alwaysMatch = {
    browserName = "chrome",
    ["goog:chromeOptions"] = {
      binary = "/usr/bin/chromium",
      args = { "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1280,860", "--user-data-dir=" .. TMP .. "/chrome", "--no-first-run",
        "--disable-extensions", "--password-store=basic" },
    },
    unhandledPromptBehavior = "ignore",
  } } })
  assert(st == 200, "new session: " .. json(v))
  SESSION = v.sessionId
  log("chromium session %s", SESSION)
end

  -------------------------------------------------------------------------
  -- overview
  -------------------------------------------------------------------------
  go(URL .. "/")
  one("#overview")
  local body = page_text()
  check(body:find("WebCharge", 1, true) and body:find("WebTimeout", 1, true), "overview lists the names")
  check(body:find(EVIL_NAME, 1, true) ~= nil, "overview: the hostile name shows as its text")
  inert("overview")
  local row = one('tr[data-name="WebCharge"]')
  check(text_of(row):find("^WebCharge 0 0 0 4") ~= nil, "overview: WebCharge has 4 failed (" .. text_of(row) .. ")")
  local slowrow = text_of(one('tr[data-name="WebSlow"]'))
  check(slowrow:find("^WebSlow 0 0 1 0") ~= nil, "overview: WebSlow has 1 running (" .. slowrow .. ")")
  screenshot("overview")

  -------------------------------------------------------------------------
  -- lists: failed of a name, a search
  -------------------------------------------------------------------------
  click(one('tr[data-name="WebCharge"] td:nth-child(5) a'))
  one("#jobs")
  local rows = find("#jobs tbody tr")
  check(#rows == 4, ("list of WebCharge's failed jobs: %d rows"):format(#rows))
  check(page_text():find("charge 101 failed", 1, true) ~= nil, "the list shows the first line of the error")
  screenshot("jobs-failed")

  go(URL .. "/jobs")
  type_into(one('#search input[name="q"]'), "INV-4002")
  click(one('#search button'))
  wait_for(function() return #find("#jobs tbody tr") == 1 end, 5)
  rows = find("#jobs tbody tr")
  check(#rows == 1 and text_of(rows[1]):find("WebLater") ~= nil, "search by payload text finds the one job")
  go(URL .. "/jobs?q=key%22%3E%3Cscript")
  check(#find("#jobs tbody tr") == 1, "search by key text finds the hostile job")
  inert("search")
  go(URL .. "/jobs?state=running")
  rows = find("#jobs tbody tr")
  check(#rows == 1 and text_of(rows[1]):find("WebSlow", 1, true) and #find("#jobs .worker") == 1
    and text_of(one("#jobs .worker")):find(":%d+:") ~= nil, "the running job shows with its worker")
  go(URL .. "/jobs?state=done")
  check(#find("#jobs tbody tr") == 5 + #charge_ok, "done jobs (history) are listed")
  screenshot("jobs-done")

  -------------------------------------------------------------------------
  -- detail of the hostile job: payload, key, whole error as text
  -------------------------------------------------------------------------
  go(URL .. "/jobs/" .. evil)
  local payload = text_of(one("#payload"))
  check(payload:find(EVIL_PAYLOAD.html:gsub('"', '\\"'), 1, true) ~= nil, "detail: the hostile payload shows as text")
  local errtext = text_of(one("#error"))
  check(errtext:find(EVIL_ERROR, 1, true) ~= nil, "detail: the hostile error shows as text")
  check(page_text():find("stack traceback", 1, true) ~= nil, "detail: the whole error, traceback included")
  inert("detail of the hostile job")
  check(#find("img") == 0 and #find("b") == 0, "detail: no element came from the data")
  screenshot("job-hostile")

  -------------------------------------------------------------------------
  -- retry one failed job from its page
  -------------------------------------------------------------------------
  local target = charge_fail[1]
  go(URL .. "/jobs/" .. target)
  check(text_of(one("#state")) == "failed", "detail: job " .. target .. " is failed")
  screenshot("job-failed")
  local before = ran("WebCharge", target)
  click(one('#actions form[action$="/retry"] button'))
  local flash = text_of(one("#flash"))
  check(flash:find("will run now", 1, true) ~= nil, "retry: the page says so (" .. flash .. ")")
  check(wait_for(function() return ran("WebCharge", target) == before + 1 end, 15),
    "retry: the job ran once more (record)")

  -------------------------------------------------------------------------
  -- cancel a waiting job from the list
  -------------------------------------------------------------------------
  go(URL .. "/jobs?state=scheduled&name=WebLater")
  check(#find("#jobs tbody tr") == 3, "three waiting WebLater jobs")
  click(one(('tr[data-id="%d"] form[action$="/cancel"] button'):format(later[1])))
  flash = text_of(one("#flash"))
  check(flash:find("cancelled job " .. later[1], 1, true) ~= nil, "cancel: the page says so")
  check(#find("#jobs tbody tr") == 2, "cancel: the job left the list")
  local j = s:job(later[1])
  check(not j or j.state == "cancelled", "cancel: the job is cancelled in the database")

  -------------------------------------------------------------------------
  -- failed jobs by error: retry one group, discard another
  -------------------------------------------------------------------------
  wait_for(function() return failed_count() == FAILED end, 10)
  go(URL .. "/failed")
  one("#groups")
  local groups = find("#groups tbody tr")
  check(#groups == 3, ("three error groups (charge, timeout, hostile): %d"):format(#groups))
  inert("failed groups")
  screenshot("failed-groups")
  -- the README's picture: a smaller window, a smaller file
  wd("POST", s_("/window/rect"), { width = 1100, height = 600 })
  screenshot("readme-failed-groups")
  wd("POST", s_("/window/rect"), { width = 1280, height = 860 })
  local charge_group
  for _, g in ipairs(groups) do
    if text_of(g):find("charge N failed", 1, true) then charge_group = g end
  end
  check(charge_group and text_of(charge_group):find('charge N failed for "?" (id <hex>)', 1, true) ~= nil,
    "the charge errors share one fingerprint")
  local runs = {}
  for _, id in ipairs(charge_fail) do runs[id] = ran("WebCharge", id) end
  click(one('tr[data-group] form[action="/groups/retry"] button')) -- the largest group: the 4 charges
  flash = text_of(one("#flash"))
  check(flash:find("retried 4 failed jobs", 1, true) ~= nil, "group retry: 4 retried (" .. flash .. ")")
  check(wait_for(function()
    for _, id in ipairs(charge_fail) do if ran("WebCharge", id) ~= runs[id] + 1 then return false end end
    return true
  end, 15), "group retry: each of the 4 jobs ran exactly once more (record)")
  wait_for(function() return failed_count() == FAILED end, 10)
  go(URL .. "/failed")
  for _, g in ipairs(find("#groups tbody tr")) do
    if text_of(g):find("timeout after", 1, true) then
      click(one(('tr[data-group="%s"] form[action="/groups/discard"] button'):format(attr(g, "data-group"))))
      break
    end
  end
  flash = text_of(one("#flash"))
  check(flash:find("discarded 3 failed jobs", 1, true) ~= nil, "group discard: 3 discarded (" .. flash .. ")")
  local gone = 0
  for _, id in ipairs(timeouts) do
    local rows_ = s:jobs { id = id }
    if #rows_ == 0 then gone = gone + 1 end
  end
  check(gone == 3, "group discard: the 3 timeout jobs left the queue")

  -------------------------------------------------------------------------
  -- retry all failed of a name, from the overview
  -------------------------------------------------------------------------
  go(URL .. "/")
  local before_evil = ran(EVIL_NAME, evil)
  click(one(('tr[data-name="%s"] form[action="/names/retry-failed"] button'):format(EVIL_NAME:gsub('"', '\\"'))))
  flash = text_of(one("#flash"))
  check(flash:find("retried 1 failed job of " .. EVIL_NAME, 1, true) ~= nil, "retry all failed of a name")
  check(wait_for(function() return ran(EVIL_NAME, evil) == before_evil + 1 end, 15),
    "retry all failed: the hostile job ran once more (record)")
  inert("overview after the actions")

  -------------------------------------------------------------------------
  -- pause and resume a name, and its limit, from the overview
  -------------------------------------------------------------------------
  assert(s:limit("WebLater", { concurrency = 2, rate = 100, per = 60, by = "tenant" }) ~= nil)
  go(URL .. "/")
  check(text_of(one('tr[data-name="WebLater"] td.limit')) == "2, 100/1m per tenant",
    "overview: the limit column says the name's limits (" .. text_of(one('tr[data-name="WebLater"] td.limit')) .. ")")
  click(one('tr[data-name="WebLater"] form[action="/names/pause"] button'))
  flash = text_of(one("#flash"))
  check(flash:find("paused WebLater", 1, true) ~= nil, "pause: the flash says so (" .. flash .. ")")
  local paused_now = assert(s:paused())
  check(#paused_now == 1 and paused_now[1] == "WebLater", "pause: the name is paused in the database")
  check(text_of(one('tr[data-name="WebLater"] td.paused')) == "paused", "pause: the overview shows it paused")
  click(one('tr[data-name="WebLater"] form[action="/names/resume"] button'))
  flash = text_of(one("#flash"))
  check(flash:find("resumed WebLater", 1, true) ~= nil, "resume: the flash says so (" .. flash .. ")")
  check(#assert(s:paused()) == 0, "resume: no name is paused in the database")
  assert(s:limit("WebLater", nil) ~= nil)

  -------------------------------------------------------------------------
  -- live refresh: the page updates itself
  -------------------------------------------------------------------------
  go(URL .. "/jobs?state=scheduled&name=WebLater")
  check(#find("#jobs tbody tr") == 2, "two waiting WebLater jobs")
  s:cancel(later[2])
  check(wait_for(function() return #find("#jobs tbody tr") == 1 end, 10), "live refresh: the cancelled job left the page by itself")
  check(text_of(one("#updated")):find("updated", 1, true) ~= nil, "live refresh: the time of the update shows")

  -------------------------------------------------------------------------
  -- CSRF: a cross-site form, a forged or missing token (in the browser)
  -------------------------------------------------------------------------
  local victim = later[3]
  -- another site (another port: another origin) posts a form to the
  -- dashboard, where this browser has a session
  go(EVIL .. "?target=" .. URL .. "/jobs/" .. victim .. "/cancel")
  wait_for(function() return (title() or ""):find("Forbidden", 1, true) end, 5)
  check(title():find("Forbidden", 1, true) ~= nil, "a cross-site form post is refused (403 page)")
  check(s:job(victim).state == "scheduled", "the cross-site post cancelled nothing")
  screenshot("csrf-refused")
  go(URL .. "/")
  local st_forged = js_async([[var done = arguments[arguments.length - 1];
    fetch(arguments[0], {method: "POST", headers: {"content-type": "application/x-www-form-urlencoded"},
      body: "csrf=deadbeef"}).then(function (r) { done(r.status); });]], URL .. "/jobs/" .. victim .. "/cancel")
  check(st_forged == 403, "a same-origin POST with a forged token: 403 (" .. tostring(st_forged) .. ")")
  local st_none = js_async([[var done = arguments[arguments.length - 1];
    fetch(arguments[0], {method: "POST"}).then(function (r) { done(r.status); });]], URL .. "/jobs/" .. victim .. "/cancel")
  check(st_none == 403, "a POST without a form and token: 403")
  check(s:job(victim).state == "scheduled", "the forged posts cancelled nothing")

  -- the same at the HTTP level: a real session's cookie and token, but another Origin or Host
  local st, page, h = http("GET", URL .. "/")
  local sid = h:get("set-cookie"):match("lsid=(%x+)")
  local csrf = page:match('name="csrf" value="(%x+)"')
  local form = "csrf=" .. csrf
  local base = { cookie = "lsid=" .. sid, ["content-type"] = "application/x-www-form-urlencoded" }
  local function with(extra)
    local t = {}
    for k, v in pairs(base) do t[k] = v end
    for k, v in pairs(extra) do t[k] = v end
    return t
  end
  st = http("POST", URL .. "/jobs/" .. victim .. "/cancel", form, with { origin = "http://evil.example" })
  check(st == 403, "POST with the right token from another Origin: 403")
  st = http("POST", URL .. "/jobs/" .. victim .. "/cancel", form, with { [":authority"] = "evil.example" })
  check(st == 403, "a request with another Host (DNS rebinding): 403")
  st = http("GET", URL .. "/", nil, { [":authority"] = "rebind.attacker.example" })
  check(st == 403, "a page read with another Host: 403")
  check(s:job(victim).state == "scheduled", "nothing was cancelled by the refused requests")
  st = http("POST", URL .. "/jobs/" .. victim .. "/cancel", form, with { origin = URL })
  local vj = s:job(victim)
  check(st == 303 and (not vj or vj.state ~= "scheduled"), "the same request from the right origin cancels (303)")

  -------------------------------------------------------------------------
  -- --read-only
  -------------------------------------------------------------------------
  go(RO .. "/")
  one("#overview")
  check(#find('form[method="post"]') == 0 and #find("#read-only") == 1, "read-only: no action is shown")
  go(RO .. "/failed")
  check(#find('form[method="post"]') == 0, "read-only: no group action is shown")
  screenshot("read-only")
  st, page, h = http("GET", RO .. "/")
  sid = h:get("set-cookie"):match("lsid=(%x+)")
  csrf = page:match('name="csrf" value="(%x+)"')
  -- (no form on the page, so no token: sign one with the session the way the page would)
  st = http("POST", RO .. "/names/retry-failed", "name=WebCharge&csrf=" .. tostring(csrf),
    { cookie = "lsid=" .. sid, ["content-type"] = "application/x-www-form-urlencoded", origin = RO })
  check(st == 403, "read-only: a POST is refused (403)")
  st = http("POST", RO .. "/names/pause", "name=WebCharge&csrf=" .. tostring(csrf),
    { cookie = "lsid=" .. sid, ["content-type"] = "application/x-www-form-urlencoded", origin = RO })
  check(st == 403 and #assert(s:paused()) == 0, "read-only: a pause is refused (403), nothing paused")

  -------------------------------------------------------------------------
  -- --token
  -------------------------------------------------------------------------
  st = http("GET", TK .. "/")
  check(st == 403, "token: a page without the token is refused (403)")
  st = http("GET", TK .. "/jobs/" .. evil)
  check(st == 403, "token: a job's page without the token: 403")
  st = http("GET", TK .. "/", nil, { authorization = "Bearer wrong-token-123" })
  check(st == 403, "token: a wrong bearer token: 403")
  st = http("GET", TK .. "/", nil, { authorization = "Bearer " .. TOKEN })
  check(st == 200, "token: the bearer token: 200")
  go(TK .. "/jobs")
  check(#find("#login") == 1 and #find("#jobs") == 0, "token: the browser gets the sign-in form, no data")
  type_into(one('#login input[name="token"]'), "not-the-token")
  click(one("#login button"))
  -- (a click that submits a form may return before the next page is there: wait for it)
  check(wait_for(function()
    local t = page_text() -- (an error object while the page changes)
    return type(t) == "string" and t:find("Wrong token", 1, true)
  end, 5, "Wrong token") ~= nil,
    "token: a wrong token is refused")
  screenshot("sign-in")
  type_into(one('#login input[name="token"]'), TOKEN)
  click(one("#login button"))
  check(one("#overview") ~= nil, "token: the right token signs in")

  -------------------------------------------------------------------------
  -- /metrics, when scheduler.metrics is there (helper M's module)
  -------------------------------------------------------------------------
  if package.searchpath("scheduler.metrics", package.path) then
    local mst, mbody = http("GET", URL .. "/metrics")
    check(mst == 200 and mbody:find("lua_scheduler_", 1, true) ~= nil, "/metrics serves the Prometheus text")
    go(URL .. "/metrics") -- as a browser shows it (README: Metrics)
    check(page_text():find("# TYPE lua_scheduler_jobs gauge", 1, true) ~= nil, "/metrics in the browser")
    screenshot("metrics")
  else
    log("skip  /metrics: no scheduler.metrics module on this branch")
  end

  -------------------------------------------------------------------------
  -- the database password (the token dashboard's)
  -------------------------------------------------------------------------
  if PWROLE then
    local auth = { authorization = "Bearer " .. TOKEN }
    local all = {}
    for _, path in ipairs { "/", "/jobs", "/jobs/" .. evil, "/failed" } do
      local _, b = http("GET", TK .. path, nil, auth)
      all[#all + 1] = b
    end
    local pages = table.concat(all)
    check(pages:find("scheduler_pw:***@", 1, true) ~= nil, "password: the pages name the database, password as ***")
    check(not pages:find(PASSWORD, 1, true), "password: on no page")
    local tkpid
    for _, p in ipairs(pids) do if p.name == "web-token" then tkpid = p.pid end end
    local cmdline = read("/proc/" .. tkpid .. "/cmdline") or ""
    check(cmdline:find("--database", 1, true) and not cmdline:find(PASSWORD, 1, true),
      "password: hidden from the command line (ps)")
    -- a database error on a page: the role loses its rights
    assert(psql(("REVOKE USAGE ON SCHEMA scheduler FROM %s"):format(PWROLE)))
    local est, eb = http("GET", TK .. "/jobs", nil, auth)
    check(est == 503 and eb:find("permission denied", 1, true) ~= nil and not eb:find(PASSWORD, 1, true),
      "password: a database error shows on the page (503), without it")
    -- a dashboard that cannot sign in: the error at start, without the password either
    local wrong = TCP_URL:gsub(PASSWORD, "wrong-pass-4321")
    local out, okw = sh(("%s %s web --listen 127.0.0.1:0 --database %s 2>&1"):format(LUA, BIN, q(wrong)))
    check(not okw and out:find("password authentication failed", 1, true) ~= nil
      and not out:find("wrong-pass-4321", 1, true), "password: a failed sign-in at start shows no password")
    local logs = (read(TMP .. "/web-token.err") or "") .. (read(TMP .. "/web-token.out") or "")
    check(not logs:find(PASSWORD, 1, true), "password: not in the dashboard's log")
  else
    log("skip  password checks: no PGTMP_TCP_URL")
  end

  go(URL .. "/")
  one("#overview")
  screenshot("overview-after")
end, debug.traceback)
if not ok then
  failures = failures + 1
  log("FAIL  %s", tostring(err))
  pcall(screenshot, "at-failure")
end

write(STOP, "")
if SESSION then pcall(wd, "DELETE", s_("")) end
local killed = stop_all()
if #killed > 0 then log("note  SIGTERM did not stop %s within 5 s: killed", table.concat(killed, ", ")) end
if s then s:close() end
for _, name in ipairs { "web", "web-ro", "web-token", "workers" } do
  local e = read(TMP .. "/" .. name .. ".err") or ""
  if e:find("internal error", 1, true) then
    failures = failures + 1
    log("FAIL  %s logged an internal error:\n%s", name, e)
  end
end
os.execute("rm -rf " .. q(TMP))
log("make test-web: %d checks, %d failed, %.1f s", checks, failures, scheduler.now() - T0)
os.exit(failures == 0 and 0 or 1)
