--- scheduler.web.html: what the web dashboard (scheduler.web) writes:
-- escaping, error fingerprints, and the pages as HTML strings.  Pure
-- functions of their arguments (no I/O), so that the specs check them
-- without a server.
--
-- Every value that comes from the database (names, keys, payloads, errors,
-- workers) or from the request goes through html.text or html.attr: invalid
-- UTF-8 becomes U+FFFD, control characters become \xNN, and & < > " ' become
-- entities, so a hostile field renders as its text and never as markup.

local core = require "scheduler.core"
local text = require "scheduler.cli.text"

local html = {}

local concat, floor = table.concat, math.floor

---------------------------------------------------------------------------
-- escaping
---------------------------------------------------------------------------

--- s as valid UTF-8 (scheduler.cli.text.utf8): each byte of an invalid
-- sequence becomes U+FFFD (the browser would do the same for the page, but
-- a byte that ends a sequence early could eat the '<' or '"' after it in
-- some decoders).
html.utf8 = text.utf8

local ENTITY = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- s as HTML text (also safe inside a quoted attribute): valid UTF-8,
-- control characters but newline and tab as \xNN (as `show` prints them:
-- an escape or a NUL shows as what it is), & < > " ' as entities.
function html.text(s)
  if s == nil then return "" end
  s = html.utf8(s):gsub("[%z\1-\8\11-\31\127]", function(c) return ("\\x%02x"):format(c:byte()) end)
  return (s:gsub("[&<>\"']", ENTITY))
end
html.attr = html.text

--- s as a URL query component (%XX for everything but unreserved bytes).
function html.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- A query string from an array of { key, value } pairs (nil and "" values
-- left out), with its "?" ("" when empty).
function html.query(pairs_)
  local parts = {}
  for _, kv in ipairs(pairs_) do
    if kv[2] ~= nil and kv[2] ~= "" then
      parts[#parts + 1] = html.urlencode(kv[1]) .. "=" .. html.urlencode(kv[2])
    end
  end
  return #parts > 0 and ("?" .. concat(parts, "&")) or ""
end

---------------------------------------------------------------------------
-- error fingerprints
---------------------------------------------------------------------------

--- The fingerprint of an error: its first line (the traceback below it
-- varies with the call path, the first line says what went wrong) with
-- what changes from one job to the next normalised: the directory of the
-- file:line: place a Lua error starts with, quoted values ("...",
-- '...', `...`) -> "?", UUIDs -> <uuid>, hex ids (0x..., and runs of 8 or
-- more hex digits holding a digit) -> <hex>, numbers -> N; spaces collapsed,
-- cut to 200 characters.  Jobs failing for the same reason share it.
function html.fingerprint(err)
  if err == nil or err == "" then return "(no error recorded)" end
  local line = tostring(err):match("^[^\n]*")
  line = html.utf8(line)
  -- a Lua error's place: the file's name only (a release directory, a
  -- temporary one, differs from one deployment to the next)
  line = line:gsub("^[^%s:]*/([^/%s:]+:%d+:)", "%1")
  line = line:gsub('"[^"]*"', '"?"'):gsub("'[^']*'", "'?'"):gsub("`[^`]*`", "`?`")
  line = line:gsub("%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x", "<uuid>")
  line = line:gsub("0[xX]%x+", "<hex>")
  line = line:gsub("%f[%w]%x%x%x%x%x%x%x%x+%f[^%w]", function(h)
    if h:find("%d") then return "<hex>" end
  end)
  line = line:gsub("%d+%.?%d*", "N")
  line = line:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #line > 200 then
    local cut = utf8.offset(line, 201) or 201
    line = line:sub(1, cut - 1) .. "..."
  end
  return line
end

--- A short stable id of a fingerprint, for URLs and forms (FNV-1a, 64 bits,
-- in hex: not a secret, only a name for the group).
function html.group_id(fp)
  local h = 0xcbf29ce484222325
  for i = 1, #fp do
    h = (h ~ fp:byte(i)) * 0x100000001b3
  end
  return ("%016x"):format(h)
end

---------------------------------------------------------------------------
-- formatting
---------------------------------------------------------------------------

local function utc(t)
  if not t then return "-" end
  local s = text.date("!%Y-%m-%d %H:%M:%S", t)
  return s and (s .. "Z") or html.text(("%.14g"):format(t))
end
html.utc = utc

local function took(d)
  if not d then return "-" end
  if d < 1 then return ("%.1f ms"):format(d * 1000) end
  return d < 10 and ("%.2f s"):format(d) or text.duration(d)
end
html.took = took

--- The first line of s, at most `max` characters, escaped.
local function first_line(s, max)
  return html.text(text.first_line(s and html.utf8(s), max))
end

local function json_text(v)
  local ok, s = pcall(core.json_encode, v)
  if ok then return s end
  return tostring(v)
end

--- A JSON value indented for reading (2 spaces per level), from its
-- compact encoding; strings are copied as encoded.
function html.pretty_json(v)
  local s = json_text(v)
  if #s > 1000000 then return s end -- (a megabyte of payload: as it is)
  local out, depth, i, n = {}, 0, 1, #s
  local function nl() out[#out + 1] = "\n" .. ("  "):rep(depth) end
  while i <= n do
    local c = s:sub(i, i)
    if c == '"' then
      local j = i + 1
      while j <= n do
        local d = s:sub(j, j)
        if d == "\\" then j = j + 2 elseif d == '"' then break else j = j + 1 end
      end
      out[#out + 1] = s:sub(i, j)
      i = j + 1
    else
      if c == "{" or c == "[" then
        local close = c == "{" and "}" or "]"
        if s:sub(i + 1, i + 1) == close then
          out[#out + 1] = c .. close
          i = i + 1
        else
          out[#out + 1] = c
          depth = depth + 1
          nl()
        end
      elseif c == "}" or c == "]" then
        depth = depth - 1
        nl()
        out[#out + 1] = c
      elseif c == "," then
        out[#out + 1] = ","
        nl()
      elseif c == ":" then
        out[#out + 1] = ": "
      else
        out[#out + 1] = c
      end
      i = i + 1
    end
  end
  return concat(out)
end

---------------------------------------------------------------------------
-- pages
---------------------------------------------------------------------------

--- A POST form with one button.  ctx: { csrf =, read_only = }; fields: an
-- array of { name, value }; nil in read-only mode (no action is offered).
local function action(ctx, path, label, fields, class)
  if ctx.read_only then return "" end
  local parts = { '<form method="post" class="inline" action="', html.attr(path), '">',
    '<input type="hidden" name="csrf" value="', html.attr(ctx.csrf), '">',
    '<input type="hidden" name="back" value="', html.attr(ctx.back or "/"), '">' }
  for _, f in ipairs(fields or {}) do
    parts[#parts + 1] = ('<input type="hidden" name="%s" value="%s">'):format(html.attr(f[1]), html.attr(f[2]))
  end
  parts[#parts + 1] = ('<button type="submit" class="%s">%s</button></form>'):format(
    html.attr(class or "act"), html.text(label))
  return concat(parts)
end
html.action = action

--- The whole page around `body` (already HTML).  ctx: { title, nav,
-- database (masked label), read_only, flash, live (auto refresh), csrf }.
function html.page(ctx, body)
  local nav = {}
  for _, n in ipairs { { "/", "Overview", "overview" }, { "/jobs", "Jobs", "jobs" },
    { "/failed", "Failed by error", "failed" } } do
    nav[#nav + 1] = ('<a href="%s"%s>%s</a>'):format(n[1], ctx.nav == n[3] and ' class="here"' or "", n[2])
  end
  if ctx.metrics then nav[#nav + 1] = '<a href="/metrics">Metrics</a>' end
  local flash = ""
  if ctx.flash and ctx.flash ~= "" then
    local kind, msg = ctx.flash:match("^(%a+):(.*)$")
    if kind ~= "ok" and kind ~= "error" then kind, msg = "ok", ctx.flash end
    flash = ('<p class="flash %s" id="flash">%s</p>'):format(kind, html.text(msg))
  end
  return concat {
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>', html.text(ctx.title or "lua-scheduler"), ' - lua-scheduler</title>',
    '<link rel="stylesheet" href="/static/app.css">',
    '<script src="/static/app.js" defer></script></head>',
    '<body data-live="', ctx.live and "1" or "0", '">',
    '<header><span class="brand">lua-scheduler</span><nav>', concat(nav, " "), '</nav>',
    '<span class="db" title="database">', html.text(ctx.database or ""), '</span>',
    ctx.read_only and '<span class="badge" id="read-only">read-only</span>' or "",
    ctx.live and '<label class="live"><input type="checkbox" id="live-toggle" checked> live</label>'
      .. '<span id="updated"></span>' or "",
    '</header><main>', flash, '<div id="live">', body, '</div></main></body></html>\n',
  }
end

local function num_cell(n, href)
  if href and n and n > 0 then
    return ('<td class="n"><a href="%s">%d</a></td>'):format(html.attr(href), n)
  end
  return ('<td class="n">%s</td>'):format(n and tostring(n) or "-")
end

--- The overview: one row per job name (scheduler:stats() rows).
function html.overview(ctx, rows)
  if #rows == 0 then return '<h1>Overview</h1><p class="empty">No jobs.</p>' end
  local out = { '<h1>Overview</h1><table class="grid" id="overview"><thead><tr><th>Name</th><th>Due</th>',
    '<th>Later</th><th>Running</th><th>Failed</th><th>Done/min</th><th>Oldest due</th><th>Limit</th>',
    '<th>Paused</th>', ctx.read_only and "" or "<th></th>", '</tr></thead><tbody>' }
  for _, r in ipairs(rows) do
    local q = function(state) return "/jobs" .. html.query { { "state", state }, { "name", r.name } } end
    out[#out + 1] = concat {
      '<tr data-name="', html.attr(r.name), '"><td><a href="', html.attr("/jobs" .. html.query { { "name", r.name } }),
      '">', html.text(r.name), '</a></td>',
      num_cell(r.due, q("scheduled")), num_cell(r.later, q("scheduled")), num_cell(r.running, q("running")),
      num_cell(r.failed, q("failed")), num_cell(r.done_last_minute),
      '<td class="n', r.late and r.late >= 60 and " late" or "", '">', r.late and text.duration(r.late) or "-", '</td>',
      '<td class="limit">', html.text(text.limit(r)), '</td>',
      '<td class="paused">', r.paused and '<span class="badge">paused</span>' or "-", '</td>',
      ctx.read_only and "" or ('<td>' .. (r.failed > 0 and action(ctx, "/names/retry-failed",
        ("Retry %d failed"):format(r.failed), { { "name", r.name } }) .. " " or "")
        .. action(ctx, r.paused and "/names/resume" or "/names/pause", r.paused and "Resume" or "Pause",
          { { "name", r.name } }) .. '</td>'),
      '</tr>',
    }
  end
  out[#out + 1] = '</tbody></table>'
  return concat(out)
end

local STATES = { "scheduled", "running", "failed", "done", "cancelled" }

--- The search form of the job list.  f: { state, name, q }.
function html.search_form(f)
  local opts = { '<option value="">waiting, running, failed</option>' }
  for _, s in ipairs(STATES) do
    opts[#opts + 1] = ('<option value="%s"%s>%s</option>'):format(s, f.state == s and " selected" or "", s)
  end
  return concat {
    '<form method="get" action="/jobs" class="search" id="search">',
    '<label>State <select name="state">', concat(opts), '</select></label> ',
    '<label>Name <input name="name" value="', html.attr(f.name or ""), '"></label> ',
    '<label>Search <input name="q" value="', html.attr(f.q or ""), '" placeholder="name, key or payload text"></label> ',
    f.group and ('<input type="hidden" name="group" value="' .. html.attr(f.group) .. '">') or "",
    '<button type="submit">Find</button></form>',
  }
end

--- The actions a job in this state offers.
local function job_actions(ctx, j)
  local base = "/jobs/" .. j.id
  -- (a failed job only history keeps, deleted from the queue, has no run_at)
  if j.state == "failed" and j.run_at then
    return action(ctx, base .. "/retry", "Retry") .. " " .. action(ctx, base .. "/delete", "Delete", nil, "act danger")
  elseif j.state == "scheduled" then
    return action(ctx, base .. "/cancel", "Cancel", nil, "act danger")
  end
  return ""
end
html.job_actions = job_actions

--- The job list.  f: the filter shown; jobs: rows of scheduler:jobs();
-- now: the database clock; more: whether the list was cut; scanned: how
-- many jobs a search looked through when that was its limit.
function html.jobs(ctx, f, jobs, now, more, note)
  local finished = f.state == "done" or f.state == "cancelled"
  local out = { '<h1>Jobs</h1>', html.search_form(f) }
  if note then out[#out + 1] = '<p class="note">' .. html.text(note) .. '</p>' end
  if #jobs == 0 then
    out[#out + 1] = '<p class="empty">No jobs match.</p>'
    return concat(out)
  end
  out[#out + 1] = '<table class="grid" id="jobs"><thead><tr><th>ID</th><th>Name</th><th>State</th>'
  out[#out + 1] = finished and '<th>Finished</th><th>Took</th><th>Worker</th>' or '<th>Run at</th><th>When</th>'
  out[#out + 1] = '<th>Attempt</th><th>Key</th><th>Last error</th>'
    .. (ctx.read_only and "" or "<th></th>") .. '</tr></thead><tbody>'
  for _, j in ipairs(jobs) do
    local when
    if finished then
      when = concat { '<td class="t">', utc(j.finished_at), '</td><td class="n">', took(j.duration), '</td><td>',
        html.text(j.worker or "-"), '</td>' }
    else
      local rel = j.run_at and now and text.relative(j.run_at, now, j.state == "scheduled" and "late" or "ago") or "-"
      when = concat { '<td class="t">', utc(j.run_at), '</td><td class="t">', html.text(rel), '</td>' }
    end
    out[#out + 1] = concat {
      '<tr data-id="', j.id, '"><td class="n"><a href="/jobs/', j.id, '">', j.id, '</a></td><td>',
      html.text(j.name), '</td><td><span class="state ', j.state, '">', j.state, '</span>',
      j.locked_by and j.state == "running" and ('<br><small class="worker">' .. html.text(text.cell(html.utf8(j.locked_by), 40))
        .. '</small>') or "", '</td>', when,
      '<td class="n">', j.attempt or "-", '</td><td>', html.text(j.key and text.cell(html.utf8(j.key), 40) or "-"), '</td>',
      '<td class="err">', first_line(j.last_error, 100), '</td>',
      ctx.read_only and "" or ('<td class="acts">' .. job_actions(ctx, j) .. '</td>'), '</tr>',
    }
  end
  out[#out + 1] = '</tbody></table>'
  if more then out[#out + 1] = '<p class="note">' .. html.text(more) .. '</p>' end
  return concat(out)
end

--- One job's page.  j: scheduler:job(id)'s record; now: the clock.
function html.job(ctx, j, now)
  local rows = {
    { "ID", tostring(j.id) }, { "Name", html.text(j.name) },
    { "State", ('<span class="state %s" id="state">%s</span>'):format(j.state, j.state) },
  }
  local function add(k, v) rows[#rows + 1] = { k, v } end
  if j.run_at then
    add("Run at", utc(j.run_at) .. (now and (" (" .. html.text(text.relative(j.run_at, now,
      j.state == "scheduled" and "late" or "ago")) .. ")") or ""))
  end
  add("Attempt", tostring(j.attempt or "-") .. (j.max_attempts and (" of " .. j.max_attempts .. " (the job's own)")
    or (j.run_at and " (allowed: its listener's max_attempts, else the workers' default)" or "")))
  add("Priority", tostring(j.priority or 0))
  add("Key", j.key and html.text(j.key) or "-")
  if j.created_at then add("Created at", utc(j.created_at)) end
  if j.locked_by then
    add("Locked by", html.text(j.locked_by))
    add("Lease until", utc(j.locked_until))
  end
  if j.finished_at then
    add("Last run", ("started %s, finished %s, took %s, by %s"):format(
      j.started_at and utc(j.started_at) or "- (never started)", utc(j.finished_at), took(j.duration),
      html.text(j.worker or "-")))
  end
  if j.kept_until then add("Kept until", utc(j.kept_until)) end
  local out = { '<h1>Job ', j.id, '</h1><div class="acts" id="actions">', job_actions(ctx, j), '</div>',
    '<table class="fields" id="fields">' }
  for _, r in ipairs(rows) do out[#out + 1] = ('<tr><th>%s</th><td>%s</td></tr>'):format(r[1], r[2]) end
  out[#out + 1] = '</table><h2>Payload</h2><pre id="payload">'
  if j.payload_error then -- a stored text that does not decode: as it is, and why
    out[#out + 1] = html.text(j.payload_text)
    out[#out + 1] = '</pre><p class="flash error" id="payload-error">Does not decode: '
      .. html.text(j.payload_error) .. '</p>'
  else
    out[#out + 1] = html.text(html.pretty_json(j.payload))
    out[#out + 1] = '</pre>'
  end
  if j.last_error then
    out[#out + 1] = '<h2>Last error</h2><p class="note">Group: <a href="/failed#g'
      .. html.group_id(html.fingerprint(j.last_error)) .. '">' .. html.text(html.fingerprint(j.last_error))
      .. '</a></p><pre id="error">' .. html.text(j.last_error) .. '</pre>'
  end
  return concat(out)
end

--- Failed jobs grouped by fingerprint.  groups: array of { id, fingerprint,
-- count, names = {name = n}, example = job, first, last } in display order.
function html.groups(ctx, groups, f, note)
  local out = { '<h1>Failed jobs by error</h1>' }
  if f.name then
    out[#out + 1] = '<p class="note">Name: ' .. html.text(f.name) .. ' (<a href="/failed">all names</a>)</p>'
  end
  if note then out[#out + 1] = '<p class="note">' .. html.text(note) .. '</p>' end
  if #groups == 0 then
    out[#out + 1] = '<p class="empty">No failed jobs.</p>'
    return concat(out)
  end
  out[#out + 1] = '<table class="grid" id="groups"><thead><tr><th>Jobs</th><th>Error</th><th>Names</th>'
    .. '<th>Last failed</th>' .. (ctx.read_only and "" or "<th></th>") .. '</tr></thead><tbody>'
  for _, g in ipairs(groups) do
    local names = {}
    for name, n in pairs(g.names) do names[#names + 1] = { name, n } end
    table.sort(names, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
    local cells = {}
    for i, nn in ipairs(names) do
      if i > 5 then cells[#cells + 1] = html.text(("and %d more"):format(#names - 5)) break end
      cells[#cells + 1] = ('<a href="%s">%s</a> (%d)'):format(
        html.attr("/failed" .. html.query { { "name", nn[1] } }), html.text(nn[1]), nn[2])
    end
    local fields = { { "group", g.id }, { "name", f.name } }
    if not f.name then fields[2] = nil end
    out[#out + 1] = concat {
      '<tr id="g', g.id, '" data-group="', g.id, '"><td class="n"><a href="',
      html.attr("/jobs" .. html.query { { "state", "failed" }, { "name", f.name }, { "group", g.id } }), '">', g.count,
      '</a></td><td class="err"><code>', html.text(g.fingerprint), '</code><br><small>e.g. <a href="/jobs/',
      g.example.id, '">job ', g.example.id, '</a>: ', first_line(g.example.last_error, 120), '</small></td><td>',
      concat(cells, ", "), '</td><td>', utc(g.last), '</td>',
      ctx.read_only and "" or ('<td class="acts">' .. action(ctx, "/groups/retry", ("Retry %d"):format(g.count), fields)
        .. " " .. action(ctx, "/groups/discard", ("Discard %d"):format(g.count), fields, "act danger") .. '</td>'),
      '</tr>',
    }
  end
  out[#out + 1] = '</tbody></table>'
  return concat(out)
end

--- The sign-in page (--token).
function html.login(ctx, failed)
  return concat {
    '<h1>Sign in</h1>', failed and '<p class="flash error">Wrong token.</p>' or "",
    '<form method="post" action="/login" id="login"><input type="hidden" name="csrf" value="', html.attr(ctx.csrf), '">',
    '<label>Token <input type="password" name="token" autocomplete="current-password"></label> ',
    '<button type="submit">Sign in</button></form>',
  }
end

return html
