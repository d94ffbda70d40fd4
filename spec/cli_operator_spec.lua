-- The operator's commands against hostile and bulky data (issue 17, items 2
-- and 3): every output path is linear in the size of the data, tables cut
-- long fields (--json and show give them whole); delete, bulk cancel and
-- purge report counts and never touch a running job; jobs/show say which
-- attempts limit the worker applies and where it comes from.  (purge
-- replaced the bulk forms of cancel and purge --failed: issue 16.)
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"

local decode = cli.decode

local function exec(...) return cli.exec({ ... }) end

local function assert_exit(code, r)
  assert.equals(code, r.code, cli.describe(r))
end

-- The longest line of a text.
local function widest(s)
  local w = 0
  for line in s:gmatch("[^\n]*") do w = math.max(w, utf8.len(line) or #line) end
  return w
end

describe("lua-scheduler with bulky data", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("a 1 MB name, key and error list in linear time (jobs, stats, show), cut in tables", function()
    -- made through the API (a command line cannot carry 1 MB), as anyone
    -- who can insert a job can; multibyte, with a newline and an escape
    local tag = helper.name("huge")
    -- (PostgreSQL's btree takes index entries up to 2704 bytes compressed:
    -- its name and key indexes refuse more, so there the name is as long
    -- as fits, 192 KB that compress well; quadratic, it took ~10 minutes)
    local size = helper.SQLITE and 1024 * 1024 or 192 * 1024
    local name = tag .. ("é\n\27["):rep(size // 5)
    local key = tag .. ("k"):rep(helper.SQLITE and 1024 * 1024 or 2000)
    local err = ("boom "):rep(200000) .. "\nsecond line"
    local s = helper.new()
    local id = helper.ok(s:schedule(name, { big = ("x"):rep(1024 * 1024) }, { key = key }))
    local other = helper.ok(s:schedule(tag .. "-small", nil, { delay = 3600 }))
    s:close()
    helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 2, last_error = %s"
      .. " WHERE id = %d"):format(helper.literal(err), id))
    finally(function()
      helper.sql(("DELETE FROM scheduler.jobs WHERE id IN (%d, %d)"):format(id, other))
    end)

    local function timed(...)
      local t, r = helper.timed(exec, ...)
      assert_exit(0, r)
      -- generous: quadratic layout took minutes for 100 KB; linear, it
      -- takes about 0.1 s (1.5 s once under ASan on a loaded machine)
      assert.is_true(t < 10, ("%s took %.2f s"):format(table.concat({ ... }, " "), t))
      return r
    end

    local r = timed("stats")
    -- (the other names in the database, left by the specs before, have rows too)
    local rows = 0
    for row in r.out:gmatch("[^\n]*") do
      if row:find(tag, 1, true) then rows = rows + #row end
    end
    assert.is_true(rows < 1000, rows .. " bytes of rows of the 1 MB name")
    assert.is_true(widest(r.out) < 200, r.out)
    assert.is_truthy(r.out:find(tag, 1, true), r.out)
    assert.is_falsy(r.out:find("\27", 1, true), "an escape reached the terminal")
    assert.is_truthy(r.out:find("...", 1, true), r.out)

    r = timed("jobs", "--limit", "0")
    assert.is_true(widest(r.out) < 300, r.out:sub(1, 2000))
    local line = r.out:match("\n(%s*" .. id .. " [^\n]*)")
    assert.is_truthy(line, r.out:sub(1, 2000))
    assert.matches("failed", line)
    assert.matches("boom boom", line) -- the error's first line, cut
    assert.is_falsy(line:find("second line", 1, true))

    r = timed("jobs", "--json", "--limit", "0")
    local whole
    for _, j in ipairs(decode(r.out)) do if j.id == id then whole = j end end
    assert.equals(name, whole.name)
    assert.equals(key, whole.key)
    assert.equals(err, whole.last_error)

    r = timed("show", tostring(id))
    -- whole, its control characters written as \xNN (no escape reaches the
    -- terminal, no newline passes for another field)
    local visible = name:gsub("\n", "\\x0a"):gsub("\27", "\\x1b")
    assert.is_truthy(r.out:find("name         " .. visible .. "\n", 1, true), "show gives the whole name")
    assert.is_falsy(r.out:find("\27", 1, true), "an escape reached the terminal")
    assert.is_truthy(r.out:find(key, 1, true), "show gives the whole key")
    assert.is_truthy(r.out:find("  second line", 1, true), "show gives the whole error")
    r = timed("show", tostring(id), "--json")
    assert.equals(name, decode(r.out).name)
    r = timed("stats", "--json")
    local found
    for _, row in ipairs(decode(r.out)) do if row.name == name then found = row end end
    assert.equals(1, found and found.failed)
  end)
end)

-- A database of its own (bulk commands select every job of it): a new
-- PostgreSQL database of the test cluster, or a new SQLite file; and the
-- helper.sql options that reach it.
local function fresh_database(finally)
  if helper.POSTGRESQL then
    local dbname, database = helper.new_database("operator", finally)
    return database, { dbname = dbname }
  end
  local path = helper.tmpdir() .. "/operator.db"
  return "sqlite:" .. path, { path = path }
end

-- Set job `id` failed, its last attempt due `ago` seconds ago.
local function make_failed(id, ago, attempt)
  helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = %d, last_error = 'boom',"
    .. " run_at = %s WHERE id = %d"):format(attempt or 1, helper.sql_time(helper.now() - ago), id))
end

-- Set job `id` running, leased to a worker that is not there (as if it ran it).
local function make_running(id)
  helper.sql(("UPDATE scheduler.jobs SET state = 'running', attempt = 1, locked_by = 'elsewhere:1',"
    .. " locked_until = %s%s WHERE id = %d"):format(helper.sql_time(helper.now() + 3600),
    helper.SQLITE and ", claim = 987654321" or "", id))
end

describe("delete and purge", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("never remove a job a worker runs or has claimed: each of those runs once, the rest is counted", function()
    local name = helper.name("claimed")
    local s = helper.new()
    local observer = helper.new()
    -- quick jobs first: the worker sizes its batches to its listeners'
    -- measured run time, so the due jobs below come in one batch
    local warming = true
    s:on(name, function() end)
    for _ = 1, 20 do helper.schedule(s, name, nil) end
    while warming do warming = s:run { drain = true } > 0 end
    s:off(name)
    local due = {}
    for i = 1, 5 do due[i] = helper.schedule(s, name, { n = i }) end
    local later = { helper.schedule(s, name, nil, { delay = 3600 }), helper.schedule(s, name, nil, { delay = 7200 }) }
    local failed = { helper.schedule(s, name, nil, { delay = 60 }), helper.schedule(s, name, nil, { delay = 60 }) }
    make_failed(failed[1], 10)
    make_failed(failed[2], 7200)
    local runs, inside = {}, nil
    s:on(name, function(_, job)
      runs[job.id] = (runs[job.id] or 0) + 1
      if inside then return end
      -- first job of the batch: the others are claimed with it (held by the
      -- claim's transaction on PostgreSQL, leased on SQLite), this one runs
      -- (delete last: on its own running job it falls back to cancel,
      -- which waits for the worker, and meanwhile a batch that runs long
      -- gives back its unstarted jobs, which are then waiting again)
      inside = {}
      inside.purged_young = { observer:purge { name = name, state = "failed", older_than = 3600 } }
      inside.cancelled_failed = { observer:purge { name = name, state = "failed" } }
      inside.cancelled = { observer:purge { name = name } }
      inside.delete_self = { observer:delete(job.id) }
    end)
    local ran = s:run { drain = true }
    -- the attack happened: the batch claimed all five (the warm-up made
    -- batches large), so four claimed jobs were there to remove; each ran
    assert.equals(5, ran)
    assert.same({ false }, inside.delete_self)
    assert.same({ 1 }, inside.purged_young) -- the one failed two hours ago
    assert.same({ 1 }, inside.cancelled_failed) -- the other one
    -- the waiting jobs not due, and any due job the batch had not taken
    local removed_due = 0
    for _, id in ipairs(due) do
      assert.is_true((runs[id] or 0) <= 1, "job " .. id .. " ran twice")
      if not runs[id] then
        removed_due = removed_due + 1
        assert.is_nil(s:job(id))
      end
    end
    assert.same({ 2 + removed_due }, inside.cancelled)
    local n = 0
    for _ in pairs(runs) do n = n + 1 end
    assert.equals(ran, n)
    assert.equals(5, removed_due + n)
    for _, id in ipairs(later) do assert.is_nil(s:job(id)) end
    for _, id in ipairs(failed) do assert.is_nil(s:job(id)) end
    assert.equals(0, helper.count_jobs(name))
  end)

  it("delete removes a failed or waiting job, not a running one; the API checks its arguments", function()
    local name = helper.name("delete")
    local s = helper.new()
    local f = helper.schedule(s, name, nil)
    local w = helper.schedule(s, name, nil, { delay = 60 })
    local r = helper.schedule(s, name, nil)
    make_failed(f, 5)
    make_running(r)
    assert.is_true(helper.ok(s:delete(f)))
    assert.is_true(helper.ok(s:delete(w)))
    assert.same({ false }, { s:delete(r) })
    assert.same({ false }, { s:delete(f) })
    assert.equals("running", s:job(r).state)
    assert.equals(0, helper.ok(s:purge { name = name }))
    assert.equals(0, helper.ok(s:purge { name = name, state = "failed" }))
    assert.equals(1, helper.count_jobs(name))
    helper.raises(function() s:delete("1") end, "delete: the job id must be an integer")
    helper.raises(function() s:purge { state = "running" } end, "a running job is never removed")
    helper.raises(function() s:purge { names = "x" } end, 'unknown option "names"')
    helper.raises(function() s:purge { older_than = -1 } end, "older_than must be")
    helper.raises(function() s:purge { name = "" } end, "must not be empty")
  end)

  it("the commands report counts (text and --json), leave running jobs, and refuse bad usage", function()
    local database, where = fresh_database(finally)
    local env = { env = { LUA_SCHEDULER_DATABASE = database } }
    local function run(...) return cli.exec({ ... }, env) end
    local s = helper.new { database = database }
    local a, b = helper.name("a"), helper.name("b")
    local ids = {}
    for i = 1, 3 do ids[#ids + 1] = helper.schedule(s, a, i) end -- 1-3 waiting
    for i = 1, 2 do ids[#ids + 1] = helper.schedule(s, b, i, { delay = 600 }) end -- 4-5 waiting
    local running = helper.schedule(s, a, nil)
    local old, young = helper.schedule(s, a, nil), helper.schedule(s, b, nil)
    s:close()
    local function sql(q) return helper.sql(q, where) end
    local function sql_time(t) return helper.sql_time(t) end
    sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 2, run_at = %s WHERE id = %d")
      :format(sql_time(helper.now() - 2 * 86400), old))
    sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 2, run_at = %s WHERE id = %d")
      :format(sql_time(helper.now() - 60), young))
    sql(("UPDATE scheduler.jobs SET state = 'running', attempt = 1, locked_by = 'x:1', locked_until = %s%s"
      .. " WHERE id = %d"):format(sql_time(helper.now() + 3600), helper.SQLITE and ", claim = 987654321" or "",
      running))

    local r = run("delete", tostring(running))
    assert_exit(1, r)
    assert.matches("job " .. running .. " is running; only a failed or waiting job can be deleted", r.err)
    r = run("cancel", tostring(old))
    assert_exit(1, r)
    assert.matches("delete " .. old .. " removes it", r.err)

    r = run("purge", "--all", "--state", "failed", "--older-than", "1d")
    assert_exit(0, r)
    assert.equals("purged 1 failed job\n", r.out)
    r = run("purge", a, "--state", "failed", "--json")
    assert_exit(0, r)
    assert.same({ purged = 0 }, decode(r.out))

    r = run("purge", b, "--state", "scheduled", "--json")
    assert_exit(0, r)
    assert.same({ purged = 2 }, decode(r.out))
    r = run("purge", "--all")
    assert_exit(0, r)
    assert.equals("purged 4 jobs\n", r.out) -- 3 waiting of a, the young failed one of b
    r = run("jobs", "--json")
    assert_exit(0, r)
    local left = decode(r.out)
    assert.equals(1, #left)
    assert.equals(running, left[1].id)
    r = run("delete", "999999")
    assert_exit(1, r)
    assert.matches("no job 999999", r.err)

    for _, bad in ipairs {
      { { "cancel" }, "missing ID" },
      { { "cancel", "--all" }, "unknown option --all" },
      { { "purge", "x", "--all" }, "not both" },
      { { "purge", "--all", "--state", "running" }, "expected one of scheduled, failed" },
      { { "purge" }, "missing NAME (or --all)" },
      { { "purge", "" }, "NAME must not be empty" },
      { { "purge", "--all", "--older-than", "soon" }, "--older-than" },
      { { "delete" }, "missing ID" },
      { { "delete", "x" }, "expected a job id" },
    } do
      r = cli.exec(bad[1], env)
      assert_exit(2, r)
      assert.is_truthy(r.err:find(bad[2], 1, true), cli.describe(r))
    end
  end)
end)

describe("attempts allowed", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("jobs and show apply job, then listener (--listeners), then default, and say which", function()
    local name, other = helper.name("limited"), helper.name("plain")
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/l.lua", ([[
local scheduler = require "scheduler"
scheduler.on(%q, function() error("boom") end, { max_attempts = 3 })
scheduler.on(%q, function() end)
]]):format(name, other))
    local s = helper.new()
    local failed = helper.schedule(s, name, nil)
    local own = helper.schedule(s, name, nil, { delay = 60, max_attempts = 7 })
    local plain = helper.schedule(s, other, nil, { delay = 60 })
    s:close()
    make_failed(failed, 1, 3)

    local r = exec("jobs", "--name", name)
    assert_exit(0, r)
    assert.matches("failed%s+.-%s+3/25%?%s+boom", r.out)
    assert.matches("0/7%s", r.out .. " ")
    assert.matches("%?: 25, the default, unless the job's listener sets max_attempts", r.err)
    r = exec("jobs", "--name", name, "--listeners", dir .. "/l.lua")
    assert_exit(0, r)
    assert.matches("failed%s+.-%s+3/3%s+boom", r.out)
    assert.equals("", cli.after_db_line(r.err))

    r = exec("show", tostring(failed), "--listeners", dir)
    assert_exit(0, r)
    assert.matches("attempt%s+3 of 3 %(its listener's max_attempts, in " .. dir:gsub("%p", "%%%0"), r.out)
    r = exec("show", tostring(failed))
    assert.matches("attempt%s+3 of 25 %(the default, unless its listener sets max_attempts", r.out)
    r = exec("show", tostring(own), "--listeners", dir)
    assert.matches("attempt%s+0 of 7 %(the job's own max_attempts%)", r.out)
    r = exec("show", tostring(plain), "--listeners", dir, "--json")
    local j = decode(r.out)
    assert.equals(25, j.attempts_allowed)
    assert.equals("default", j.attempts_allowed_from)
    j = decode(exec("show", tostring(failed), "--listeners", dir, "--json").out)
    assert.same({ 3, "listener" }, { j.attempts_allowed, j.attempts_allowed_from })
    j = decode(exec("show", tostring(failed), "--json").out)
    assert.same({ 25, "default?" }, { j.attempts_allowed, j.attempts_allowed_from })

    -- the variable a systemd EnvironmentFile can share with `run`
    r = cli.exec({ "jobs", "--name", name }, { env = { LUA_SCHEDULER_LISTENERS = dir } })
    assert_exit(0, r)
    assert.matches("failed%s+.-%s+3/3%s+boom", r.out)

    r = exec("jobs", "--listeners", dir .. "/missing.lua")
    assert_exit(2, r)
    assert.matches("%-%-listeners: cannot read listener file", r.err)
  end)
end)
