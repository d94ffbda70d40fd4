-- The web dashboard's handlers (issue 15 items 4 and 5), without a browser
-- or a socket: app:handle(request) against the real database.  Each test
-- attacks one promise: hostile fields render as text, actions need a POST
-- from the same origin with the session's CSRF token, --read-only refuses
-- them all, --token guards every page, the Host header must name the
-- loopback address, the password never reaches a page, and failed jobs
-- group by fingerprint with group actions counted job by job.
-- (make test-web drives the same dashboard in headless Chromium.)
local helper = require "spec.helper"
local web = require "scheduler.web"
local html = require "scheduler.web.html"

-- lua-http's luaossl (HMAC, random bytes) is installed with it for Lua 5.1-5.3
web.use_lua_http()

local HOST = "127.0.0.1:8080"

local function get(app, path, opts)
  opts = opts or {}
  local p, q = path:match("^([^?]*)%??(.*)$")
  local headers = { host = HOST, cookie = opts.cookie }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return app:handle { method = "GET", path = p, target = path, query = web.parse_query(q), headers = headers }
end

local function header(res, name)
  local all = {}
  for _, kv in ipairs(res.headers) do if kv[1] == name then all[#all + 1] = kv[2] end end
  return all[1], all
end

--- A browser's session: the cookies it keeps, its CSRF token (read from a
-- page, as the browser's form would carry it).
local function session(app)
  local res = get(app, "/")
  local jar = {}
  local _, cookies = header(res, "set-cookie")
  for _, c in ipairs(cookies) do
    local k, v = c:match("^([^=]+)=([^;]*)")
    jar[k] = v
  end
  local csrf = res.body:match('name="csrf" value="(%x+)"')
  return { jar = jar, csrf = csrf or app:csrf_of(jar.lsid) }
end

local function cookie_of(sess)
  local parts = {}
  for k, v in pairs(sess.jar) do parts[#parts + 1] = k .. "=" .. v end
  return table.concat(parts, "; ")
end

local function post(app, sess, path, form, headers)
  local body = {}
  for k, v in pairs(form or {}) do body[#body + 1] = html.urlencode(k) .. "=" .. html.urlencode(v) end
  local h = { host = HOST, ["content-type"] = "application/x-www-form-urlencoded", cookie = cookie_of(sess),
    origin = "http://" .. HOST }
  for k, v in pairs(headers or {}) do h[k] = v or nil end
  if headers and headers.origin == false then h.origin = nil end
  return app:handle { method = "POST", path = path, headers = h, body = table.concat(body, "&") }
end

local function state_of(s, id)
  local j = s:job(id)
  return j and j.state
end

local function make_failed(id, err)
  helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 1, last_error = %s WHERE id = %d")
    :format(helper.literal(err), id))
end

describe("web dashboard", function()
  after_each(helper.cleanup)

  describe("escaping and fingerprints", function()
    it("renders hostile text inert: markup, quotes, control characters, invalid UTF-8", function()
      assert.equals("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;", html.text("<script>alert('x')</script>"))
      assert.equals("a&quot; onmouseover=&quot;x", html.attr('a" onmouseover="x'))
      assert.equals("\\x1b[31m\\x00", html.text("\27[31m\0"))
      assert.equals("ok\u{FFFD}&lt;\u{FFFD}\u{FFFD}", html.text("ok\xff<\xc3\xc3"))
      -- an over-long encoding of '<' must not come back as a '<'
      assert.is_nil(html.text("\xc0\xbcscript"):find("<", 1, true))
      assert.is_truthy(utf8.len(html.text(("\xe2\x82"):rep(10000))))
    end)

    it("normalises numbers, ids and quoted values out of the fingerprint", function()
      local a = html.fingerprint('worker.lua:12: charge 4711 failed for "ada@example.com" (id 3f2a9c1e-0000-4000-8000-00000000abcd)\nstack traceback:\n...')
      local b = html.fingerprint("worker.lua:12: charge 99 failed for \"bob@example.com\" (id 8d1c2e3f-1111-4111-8111-111111111111)\nother")
      assert.equals(a, b)
      assert.equals('worker.lua:N: charge N failed for "?" (id <uuid>)', a)
      assert.equals(html.fingerprint("timeout after 0x7f3a bytes, token deadbeef01 'k1'"),
        html.fingerprint("timeout after 0x1 bytes, token 00c0ffee99 'other key'"))
      assert.are_not.equal(html.fingerprint("connection refused"), html.fingerprint("connection reset"))
      assert.equals(html.fingerprint("/srv/app/releases/2026-12-01/lib/pay.lua:7: refused"),
        html.fingerprint("/srv/app/releases/2026-12-05/lib/pay.lua:7: refused"))
      assert.equals("pay.lua:N: refused", html.fingerprint("/srv/app/pay.lua:7: refused"))
      assert.equals("(no error recorded)", html.fingerprint(nil))
      assert.is_true(#html.fingerprint(("word "):rep(1000)) <= 203)
      assert.equals(html.group_id(a), html.group_id(b))
    end)
  end)

  describe("against the database", function()
    local s, app

    before_each(function()
      s = helper.new()
      app = web.app { api = s, database = "db", hosts = { [HOST] = true } }
    end)

    it("shows hostile names, keys, payloads and errors as text on every page", function()
      local name = helper.name("<script>window.xss=1</script>")
      local evil = [["><img src=x onerror=alert(1)>]]
      local id = helper.schedule(s, name, { html = evil }, { key = "k" .. evil })
      -- (invalid UTF-8 can only be stored by SQLite; PostgreSQL refuses it)
      make_failed(id, "Error: <svg onload=alert(2)>\n\ttraceback ' \" \27[2J" .. (helper.SQLITE and "\xff<" or ""))
      for _, path in ipairs { "/", "/jobs", "/jobs?state=failed", "/jobs/" .. id, "/failed",
        "/jobs?q=" .. html.urlencode("onerror") } do
        local res = get(app, path)
        assert.equals(200, res.status, path)
        assert.is_nil(res.body:find("<script>window", 1, true), path)
        assert.is_nil(res.body:find("<img", 1, true), path)
        assert.is_nil(res.body:find("<svg", 1, true), path)
        assert.is_nil(res.body:find("\27", 1, true), path)
        assert.is_truthy(utf8.len(res.body), path)
      end
      local detail = get(app, "/jobs/" .. id).body
      assert.is_truthy(detail:find("&lt;svg onload=alert(2)&gt;\n\ttraceback &#39; &quot; \\x1b[2J", 1, true))
      assert.is_truthy(detail:find("&lt;script&gt;window.xss=1&lt;/script&gt;", 1, true))
      -- no inline script may run at all, escaped or not
      assert.matches("script%-src 'self'", (header(get(app, "/"), "content-security-policy")))
      -- search finds it by key and by payload text (within its name: a
      -- search looks through the first 10,000 jobs of the name chosen, and
      -- the suite's other specs leave more than that)
      assert.is_truthy(get(app, "/jobs?name=" .. html.urlencode(name) .. "&q=" .. html.urlencode("K\"><IMG")).body
        :find('data-id="' .. id .. '"', 1, true))
      assert.is_nil(get(app, "/jobs?q=nothing-like-this-anywhere").body:find('data-id="' .. id .. '"', 1, true))
    end)

    it("shows jobs another program wrote: an undecodable payload, a time far away", function()
      -- one such row must not turn the lists into an error page (the
      -- suite's other specs leave such rows in the same database)
      local name = helper.name("foreign")
      local bad = helper.sql_int(("INSERT INTO scheduler.jobs (name, payload, run_at) VALUES (%s, %s, %s) RETURNING id")
        :format(helper.literal(name), helper.literal('{"n": 1e400}'),
          helper.SQLITE and "1e300" or "now() + interval '1000 years'"))
      -- (SQLite stores any double; PostgreSQL refuses a time this far)
      local far = helper.SQLITE and helper.schedule(s, name, "far", { at = 1e300 }) or bad
      local search = "/jobs?name=" .. html.urlencode(name) .. "&q=" .. html.urlencode("foreign")
      for _, path in ipairs { "/", "/jobs", "/jobs?q=foreign", search, "/jobs/" .. bad, "/jobs/" .. far } do
        assert.equals(200, get(app, path).status, path)
      end
      assert.is_truthy(get(app, search).body:find('data-id="' .. bad .. '"', 1, true))
      local detail = get(app, "/jobs/" .. bad).body
      -- the text as stored (PostgreSQL's jsonb writes the number out)
      assert.is_truthy(detail:find(helper.SQLITE and "{&quot;n&quot;: 1e400}" or "{&quot;n&quot;: 1000000", 1, true),
        detail)
      assert.is_truthy(detail:find("Does not decode: invalid JSON at byte", 1, true), detail)
    end)

    it("runs an action only as a same-origin POST with the session's CSRF token", function()
      local name = helper.name("csrf")
      local id = helper.schedule(s, name, nil, { delay = 3600 })
      local sess = session(app)
      assert.is_string(sess.csrf)
      -- a GET never acts
      assert.equals(404, get(app, "/jobs/" .. id .. "/cancel").status)
      -- no token, a wrong one, another session's, another origin, a cross-site fetch
      local other = session(app)
      for _, attempt in ipairs {
        { {} }, { { csrf = "00" } }, { { csrf = other.csrf } },
        { { csrf = sess.csrf }, { origin = "http://evil.example" } },
        { { csrf = sess.csrf }, { origin = "null" } },
        { { csrf = sess.csrf }, { origin = false, ["sec-fetch-site"] = "cross-site" } },
        { { csrf = sess.csrf }, { ["content-type"] = "text/plain" } },
      } do
        local res = post(app, sess, "/jobs/" .. id .. "/cancel", attempt[1], attempt[2])
        assert.equals(403, res.status)
        assert.equals("scheduled", state_of(s, id))
      end
      local res = post(app, sess, "/jobs/" .. id .. "/cancel", { csrf = sess.csrf, back = "//evil.example/x" })
      assert.equals(303, res.status)
      assert.equals("/", (header(res, "location"))) -- never off the site
      assert.are_not.equal("scheduled", state_of(s, id))
      -- behind a TLS proxy the origin is https://HOST
      local id3 = helper.schedule(s, name, nil, { delay = 3600 })
      assert.equals(303, post(app, sess, "/jobs/" .. id3 .. "/cancel", { csrf = sess.csrf },
        { origin = "https://" .. HOST }).status)
      assert.equals(403, post(app, sess, "/jobs/" .. id3 .. "/cancel", { csrf = sess.csrf },
        { origin = "https://" .. HOST .. ".evil.example" }).status)
      -- no Origin header (an older client) with the right token is fine
      local id2 = helper.schedule(s, name, nil, { delay = 3600 })
      assert.equals(303, post(app, sess, "/jobs/" .. id2 .. "/cancel", { csrf = sess.csrf }, { origin = false }).status)
    end)

    it("serves /metrics from scheduler.metrics's render (when given), the assets, and 404s", function()
      local seen
      local m = web.app { api = s, database = "db", metrics = function(api)
        seen = api
        return "lua_scheduler_jobs{name=\"x\",state=\"due\"} 1\n"
      end }
      local res = get(m, "/metrics")
      assert.equals(200, res.status)
      assert.matches("^text/plain; version=0.0.4", (header(res, "content-type")))
      assert.equals(s, seen)
      local bad = web.app { api = s, database = "db", secrets = { "pw-123456" }, metrics = function()
        error("cannot connect with pw-123456")
      end }
      res = get(bad, "/metrics")
      assert.equals(503, res.status)
      assert.is_nil(res.body:find("pw-123456", 1, true))
      -- without the module: 404 (helper M's scheduler.metrics is wired at merge)
      local none = web.app { api = s, database = "db", metrics = false }
      assert.equals(404, get(none, "/metrics").status)
      assert.matches("^text/javascript", (header(get(app, "/static/app.js"), "content-type")))
      assert.equals(404, get(app, "/jobs/999999999").status)
      assert.equals(404, get(app, "/nowhere").status)
      local sess = session(app)
      assert.equals(404, post(app, sess, "/nowhere", { csrf = sess.csrf }).status)
    end)

    it("refuses a Host it does not listen on (DNS rebinding)", function()
      assert.equals(403, get(app, "/", { headers = { host = "attacker.example:8080" } }).status)
      assert.equals(200, get(app, "/").status)
    end)

    it("--read-only shows no action and refuses every POST", function()
      local name = helper.name("ro")
      local id = helper.schedule(s, name, nil, { delay = 3600 })
      local failed = helper.schedule(s, name, nil, { delay = 3600 })
      make_failed(failed, "boom 1")
      local ro = web.app { api = s, database = "db", read_only = true }
      for _, path in ipairs { "/", "/jobs", "/jobs/" .. id, "/jobs/" .. failed, "/failed" } do
        local body = get(ro, path).body
        assert.is_nil(body:find('method="post"', 1, true), path)
      end
      local sess = session(ro)
      for _, p in ipairs { "/jobs/" .. id .. "/cancel", "/jobs/" .. failed .. "/retry", "/jobs/" .. failed .. "/delete",
        "/names/retry-failed", "/groups/retry", "/groups/discard" } do
        local res = post(ro, sess, p, { csrf = sess.csrf, name = name, group = html.group_id(html.fingerprint("boom 1")) })
        assert.equals(403, res.status, p)
      end
      assert.equals("scheduled", state_of(s, id))
      assert.equals("failed", state_of(s, failed))
    end)

    it("--token guards every page and action: Bearer, Basic, or the sign-in cookie", function()
      local token = "correct-horse-battery"
      local app_t = web.app { api = s, database = "db", token = token }
      assert.equals(403, get(app_t, "/").status)
      assert.equals(403, get(app_t, "/jobs").status)
      assert.equals(403, get(app_t, "/metrics").status)
      assert.equals(403, get(app_t, "/", { headers = { authorization = "Bearer wrong-horse-battery" } }).status)
      assert.equals(200, get(app_t, "/", { headers = { authorization = "Bearer " .. token } }).status)
      local basic = "Basic " .. "dTpjb3JyZWN0LWhvcnNlLWJhdHRlcnk=" -- u:correct-horse-battery
      assert.equals(200, get(app_t, "/", { headers = { authorization = basic } }).status)
      -- the sign-in form: a wrong token is refused, the right one signs this session in only
      local sess = session(app_t)
      assert.equals(403, post(app_t, sess, "/login", { csrf = sess.csrf, token = "nope" }).status)
      assert.equals(403, post(app_t, sess, "/login", { token = token }).status) -- no CSRF token
      local res = post(app_t, sess, "/login", { csrf = sess.csrf, token = token })
      assert.equals(303, res.status)
      local _, cookies = header(res, "set-cookie")
      local before = sess.jar.lsid
      for _, c in ipairs(cookies) do
        local k, v = c:match("^([^=]+)=([^;]*)")
        sess.jar[k] = v
      end
      assert.are_not.equal(before, sess.jar.lsid) -- a new session on sign-in
      assert.equals(200, get(app_t, "/", { cookie = cookie_of(sess) }).status)
      -- the cookie is bound to its session: with another session id it is worthless
      local other = session(app_t)
      other.jar.lauth = sess.jar.lauth
      assert.equals(403, get(app_t, "/", { cookie = cookie_of(other) }).status)
      -- the static files need nothing (they hold no data)
      assert.equals(200, get(app_t, "/static/app.js").status)
    end)

    it("never shows the database password, also in an error", function()
      local secret = "s3cr3t-Pa55"
      local broken = setmetatable({}, { __index = function()
        return function() return nil, "scheduler: stats: cannot connect to postgresql://u:" .. secret .. "@h/db" end
      end })
      local a = web.app { api = broken, database = "postgresql://u:***@h/db", secrets = { secret } }
      local res = get(a, "/")
      assert.equals(503, res.status)
      assert.is_nil(res.body:find(secret, 1, true))
      assert.is_truthy(res.body:find("u:***@h/db", 1, true))
    end)

    it("groups failed jobs by fingerprint; retry and discard act on one whole group", function()
      local name = helper.name("grp")
      local a, b, c = {}, {}, {}
      for i = 1, 3 do
        a[i] = helper.schedule(s, name, nil, { delay = 3600 })
        make_failed(a[i], ("charge %d failed for 'user%d'"):format(100 + i, i))
        b[i] = helper.schedule(s, name, nil, { delay = 3600 })
        make_failed(b[i], ("timeout after %d ms\nstack traceback:\n\tx.lua:%d"):format(i * 10, i))
      end
      c[1] = helper.schedule(s, name, nil, { delay = 3600 })
      make_failed(c[1], "another reason")
      local page = get(app, "/failed?name=" .. html.urlencode(name)).body
      local ga, gb = html.group_id(html.fingerprint("charge 1 failed for 'x'")), html.group_id(html.fingerprint("timeout after 1 ms"))
      assert.is_truthy(page:find('data-group="' .. ga .. '"', 1, true))
      assert.is_truthy(page:find('data-group="' .. gb .. '"', 1, true))
      -- the group's job list
      local list = get(app, "/jobs?state=failed&group=" .. ga .. "&name=" .. html.urlencode(name)).body
      for i = 1, 3 do assert.is_truthy(list:find('data-id="' .. a[i] .. '"', 1, true)) end
      assert.is_nil(list:find('data-id="' .. b[1] .. '"', 1, true))
      local sess = session(app)
      local res, result = post(app, sess, "/groups/retry", { csrf = sess.csrf, group = ga, name = name })
      assert.equals(303, res.status)
      assert.equals("ok:retried 3 failed jobs", result)
      for i = 1, 3 do
        assert.equals("scheduled", state_of(s, a[i]))
        assert.equals("failed", state_of(s, b[i]))
      end
      res, result = post(app, sess, "/groups/discard", { csrf = sess.csrf, group = gb, name = name })
      assert.equals("ok:discarded 3 failed jobs", result)
      for i = 1, 3 do assert.is_nil(s:jobs { id = b[i] }[1]) end
      assert.equals("failed", state_of(s, c[1]))
      -- a group that no longer exists does nothing
      res, result = post(app, sess, "/groups/discard", { csrf = sess.csrf, group = gb, name = name })
      assert.matches("^error:", result)
      -- retry all failed of a name, then single actions
      res, result = post(app, sess, "/names/retry-failed", { csrf = sess.csrf, name = name })
      assert.equals("ok:retried 1 failed job of " .. name, result)
      res, result = post(app, sess, "/jobs/" .. c[1] .. "/retry", { csrf = sess.csrf })
      assert.equals("error:job " .. c[1] .. " is scheduled: not failed, so it was not retried", result)
      -- the flash message shows, escaped, on the next page
      local flash = res.headers[#res.headers][2]:match("^lflash=([^;]*)")
      sess.jar.lflash = flash
      assert.is_truthy(get(app, "/", { cookie = cookie_of(sess) }).body:find("not retried", 1, true))
      -- one set by someone else (another port of the host shares the cookies) does not show
      sess.jar.lflash = html.urlencode("ok:all your jobs were deleted") .. ".0123456789abcdef0123456789abcdef"
      assert.is_nil(get(app, "/", { cookie = cookie_of(sess) }).body:find("all your jobs", 1, true))
    end)
  end)
end)

describe("lua-scheduler web", function()
  local cli = require "spec.support.cli_helper"
  after_each(helper.cleanup) -- (each command's directory)

  it("refuses another address than loopback without a token, and a short token", function()
    local r = cli.exec { "web", "--listen", "0.0.0.0:0" }
    assert.equals(2, r.code, cli.describe(r))
    assert.matches("not a loopback address: give %-%-token", r.err)
    r = cli.exec { "web", "--listen", "[::]:0" }
    assert.equals(2, r.code, cli.describe(r))
    r = cli.exec { "web", "--listen", "127.0.0.1:0", "--token", "short" }
    assert.equals(2, r.code, cli.describe(r))
    assert.matches("at least 12 characters", r.err)
    r = cli.exec { "web", "--listen", "nonsense" }
    assert.equals(2, r.code, cli.describe(r))
    assert.is_true(web.is_loopback("127.0.0.1") and web.is_loopback("::1") and web.is_loopback("localhost"))
    assert.is_false(web.is_loopback("0.0.0.0") or web.is_loopback("::") or web.is_loopback("10.0.0.1"))
  end)
end)
