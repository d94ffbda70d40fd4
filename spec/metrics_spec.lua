-- scheduler.metrics (render) and `lua-scheduler metrics`: the Prometheus
-- text, checked by a real parser (promtool, Debian's prometheus package),
-- hostile job names included; the counters (s:totals()) count every
-- completion and failure and never go down, also when the rows that hold
-- them are pruned or merged.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local metrics = require "scheduler.metrics"

-- promtool's verdict on `text`: ok, its output.
local function promtool(text)
  local file = os.tmpname()
  helper.write_file(file, text)
  local out, ok = helper.sh("promtool check metrics < " .. helper.shquote(file) .. " 2>&1")
  os.remove(file)
  return ok, out
end

-- The value of the sample `metric{labels}` in `text` (labels as written,
-- escaped), or nil.
local function value(text, metric, labels)
  local line = metric .. "{" .. labels .. "} "
  for l in text:gmatch("[^\n]+") do
    if l:sub(1, #line) == line then return tonumber(l:sub(#line + 1)) end
  end
end

local function total_of(s, name)
  for _, r in ipairs(helper.ok(s:totals())) do
    if r.name == name then return r end
  end
  return { done = 0, failed = 0 }
end

-- Names a label value must survive: quotes, backslashes (an escape's
-- look-alike too), newlines, braces, '#', a space and '=', UTF-8.
local HOSTILE = { 'say "hi"', [[back\slash\n]], "two\nlines\n", '} x{name="y"} 1', "# HELP x y",
  "é 名前 = ok" }

describe("metrics", function()
  local s
  before_each(function() s = helper.new{ backoff = function() return 3600 end } end)
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("passes promtool with hostile names, each value under its own escaped label", function()
    local names = {}
    for i, h in ipairs(HOSTILE) do
      names[i] = helper.name("m") .. h
      helper.schedule(s, names[i], "ok")
      helper.schedule(s, names[i], "ok", helper.now() - 10)
      helper.schedule(s, names[i], "fail", { max_attempts = 1 })
      helper.schedule(s, names[i], "ok", { delay = 3600 })
      s:on(names[i], function(p) if p == "fail" then error("no") end end)
    end
    assert(s:pause(names[1]))
    assert.equals(3 * (#HOSTILE - 1), s:run{ drain = true })
    local text = helper.ok(metrics.render(s))
    local ok, out = promtool(text)
    assert.is_true(ok, out .. "\n" .. text)
    for i, name in ipairs(names) do
      local l = 'name="' .. name:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }) .. '"'
      local paused = i == 1
      assert.equals(paused and 3 or 0, value(text, "lua_scheduler_jobs", l .. ',state="due"'), text)
      assert.equals(1, value(text, "lua_scheduler_jobs", l .. ',state="later"'))
      assert.equals(0, value(text, "lua_scheduler_jobs", l .. ',state="running"'))
      assert.equals(paused and 0 or 1, value(text, "lua_scheduler_jobs", l .. ',state="failed"'))
      assert.equals(paused and 1 or 0, value(text, "lua_scheduler_paused", "" .. l))
      local late = value(text, "lua_scheduler_oldest_due_job_lateness_seconds", l)
      if paused then assert.is_true(late >= 9 and late < 120, tostring(late)) else assert.equals(0, late) end
      if paused then -- nothing finished yet: no counter
        assert.is_nil(value(text, "lua_scheduler_jobs_completed_total", l))
      else
        assert.equals(2, value(text, "lua_scheduler_jobs_completed_total", l))
        assert.equals(1, value(text, "lua_scheduler_jobs_failed_total", l))
      end
    end
    -- one HELP and one TYPE per metric, and every sample line belongs to one
    local types = {}
    for name, kind in text:gmatch("# TYPE (%S+) (%S+)\n") do
      assert.is_nil(types[name], name)
      types[name] = kind
    end
    assert.same({ lua_scheduler_jobs = "gauge", lua_scheduler_oldest_due_job_lateness_seconds = "gauge",
      lua_scheduler_paused = "gauge", lua_scheduler_jobs_completed_total = "counter",
      lua_scheduler_jobs_failed_total = "counter", lua_scheduler_listener_duration_seconds = "histogram",
      lua_scheduler_job_start_lateness_seconds = "histogram" }, types)
  end)

  it("counts failures for good on every path: held batch, lease, crash rule; a retry counts again", function()
    local name = helper.name("m-fail")
    s:on(name, function(p) if p ~= "ok" then error("no") end end)
    local a = helper.schedule(s, name, "x", { max_attempts = 1 })
    helper.schedule(s, name, "x", { max_attempts = 2 }) -- a retry, not a failure for good
    helper.schedule(s, name, "ok")
    assert.equals(3, s:run{ drain = true })
    assert.same({ name = name, done = 1, failed = 1 }, total_of(s, name))
    -- retried and failed again: counted again; deleted: the counter stays
    assert.is_true(s:retry(a))
    assert.equals(1, s:run{ drain = true })
    assert.equals(2, total_of(s, name).failed)
    assert.is_true(s:delete(a))
    assert.equals(2, total_of(s, name).failed)
    -- leased at concurrency above 1 (a worker process: see the closing
    -- note of session 11 on a second in-process run at concurrency 3)
    for _ = 1, 3 do helper.schedule(s, name, { fail = "no" }, { max_attempts = 1 }) end
    local w = helper.spawn { WORKER_NAMES = name, WORKER_CONCURRENCY = 3 }
    assert.is_truthy(helper.wait_for(function() return total_of(s, name).failed == 5 end, 20), w:describe())
    assert.equals(3, #w:events("fail"))
    w:kill("TERM")
    assert.is_truthy(w:wait(10), w:describe())
    -- the crash rule: a lease that expires on its last attempt
    local d = helper.schedule(s, name, "x", { max_attempts = 1 })
    helper.sql("UPDATE scheduler.jobs SET state = 'running', attempt = 1, locked_by = 'gone',"
      .. " locked_until = " .. helper.sql_time(helper.now() - 5) .. ", claim = 7 WHERE id = " .. d)
    s:run{ drain = true } -- its rescue fails the job
    assert.equals("failed", helper.ok(s:job(d)).state)
    assert.equals(6, total_of(s, name).failed)
  end)

  it("never go down when completions are pruned or failures merged", function()
    local name = helper.name("m-merge")
    s:on(name, function() end)
    -- completions older than the two minutes kept: the next batch's prune
    -- takes them, and merges them instead of dropping them
    local old = helper.now() - 600
    for k = 1, 3 do
      if helper.SQLITE then
        helper.sqlite(("INSERT INTO scheduler_completions (second, name, jobs) VALUES (%d, %s, 1000)")
          :format(math.floor(old) + k, helper.literal(name)))
      else
        helper.psql(("INSERT INTO scheduler.completions (at, name, jobs) VALUES (%s, %s, 1000)")
          :format(helper.sql_time(old + k), helper.literal(name)))
      end
    end
    assert.equals(3000, total_of(s, name).done)
    helper.schedule(s, name, nil)
    assert.equals(1, s:run{ drain = true })
    assert.equals(3001, total_of(s, name).done)
    if helper.POSTGRESQL then -- pruned, and merged
      assert.equals(0, helper.psql_int("SELECT count(*) FROM scheduler.completions WHERE name = "
        .. helper.literal(name) .. " AND at > '-infinity' AND at < now() - interval '2 minutes'"))
      assert.equals(1, helper.psql_int("SELECT count(*) FROM scheduler.completions WHERE name = "
        .. helper.literal(name) .. " AND at = '-infinity'"))
    else
      assert.equals(0, tonumber(helper.sqlite("SELECT count(*) FROM scheduler_completions WHERE name = "
        .. helper.literal(name) .. " AND second > 0 AND second < " .. math.floor(helper.now() - 120))))
    end
    -- many failures: PostgreSQL keeps a row each until totals merges them
    for _ = 1, 20 do helper.schedule(s, name, nil, { max_attempts = 1 }) end
    s:on(name, function() error("no") end)
    assert.equals(20, s:run{ drain = true })
    local seen = {}
    for i = 1, 3 do seen[i] = total_of(s, name).failed end
    assert.same({ 20, 20, 20 }, seen)
    if helper.POSTGRESQL then
      assert.equals(1, helper.psql_int("SELECT count(*) FROM scheduler.failures WHERE name = "
        .. helper.literal(name)))
    end
  end)

  it("exports listener durations from history, each job once, and keeps them when history is pruned",
    function()
      local name, other = helper.name("m-dur") .. '"\\', helper.name("m-nohist")
      local h = helper.new{ backoff = function() return 3600 end, history = "1h" }
      h:on(name, function(p)
        if p == "slow" then helper.sleep(0.06) end
        if p == "fail" then error("no") end
      end)
      h:on(other, function() end, { history = false })
      for _ = 1, 5 do helper.schedule(h, name, "quick") end
      helper.schedule(h, name, "slow")
      helper.schedule(h, name, "fail", { max_attempts = 1 })
      helper.schedule(h, other, "x")
      assert.equals(8, h:run{ drain = true })
      local function histogram()
        local rows, bounds = helper.ok(h:durations())
        for _, r in ipairs(rows) do
          if r.name == name then return r, bounds end
        end
        return nil, bounds
      end
      local r, bounds = histogram()
      assert.equals(14, #bounds)
      assert.equals(0.05, bounds[4])
      assert.equals(#bounds + 1, #r.jobs)
      local n = 0
      for _, c in ipairs(r.jobs) do n = n + c end
      assert.equals(7, n) -- the cancelled and unstarted are not runs; other keeps no history
      -- the slow one ran more than 50 ms: above the 0.05 bucket
      local upto = 0
      for k = 1, 4 do upto = upto + r.jobs[k] end
      assert.equals(6, upto)
      assert.is_true(r.seconds >= 0.06 and r.seconds < 5, tostring(r.seconds))
      -- counted once: again, the same
      assert.same(r.jobs, (histogram()).jobs)
      -- history pruned: the counts stay
      helper.sql("UPDATE scheduler.history SET kept_until = "
        .. (helper.SQLITE and tostring(helper.now() - 10) or "now() - interval '10 seconds'"))
      assert.is_true(helper.ok(h:prune_history()) >= 1)
      assert.same(r.jobs, (histogram()).jobs)
      -- a name without history has no samples; promtool takes the whole
      local text = helper.ok(metrics.render(h))
      local ok, out = promtool(text)
      assert.is_true(ok, out .. "\n" .. text)
      local l = 'name="' .. name:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }) .. '"'
      assert.equals(6, value(text, "lua_scheduler_listener_duration_seconds_bucket", l .. ',le="0.05"'), text)
      assert.equals(7, value(text, "lua_scheduler_listener_duration_seconds_bucket", l .. ',le="+Inf"'))
      assert.equals(7, value(text, "lua_scheduler_listener_duration_seconds_count", l))
      assert.is_falsy(text:find('lua_scheduler_listener_duration_seconds_count{name="' .. other, 1, true))
      assert.is_truthy(text:find("# TYPE lua_scheduler_listener_duration_seconds histogram\n", 1, true))
    end)

  it("exports start lateness from history: from run_at to the listener's start, a retry's from its own, "
    .. "held batches and leases", function()
    local name, leased = helper.name("m-late") .. '"\\', helper.name("m-late-leased")
    local h = helper.new{ backoff = function() return 0 end, history = "1h" }
    local failed = {}
    h:on(name, function(p)
      if p == "retry" and not failed[p] then
        failed[p] = true
        error("once")
      end
    end)
    local t = helper.now()
    helper.schedule(h, name, "a", { at = t - 10 })
    helper.schedule(h, name, "b", { at = t - 100 })
    -- fails at once, 100 s late; its retry is due at once (backoff 0): its
    -- lateness is the retry's, not 100 s more
    helper.schedule(h, name, "retry", { at = t - 100 })
    assert.equals(4, helper.drain_until(h, function() return total_of(h, name).done == 3 end))
    local function histogram(n)
      local rows, bounds, late_bounds = helper.ok(h:durations())
      for _, r in ipairs(rows) do
        if r.name == n then return r.late, late_bounds, bounds end
      end
      return nil, late_bounds, bounds
    end
    local r, late_bounds = histogram(name)
    assert.equals(14, #late_bounds)
    assert.same({ 0.001, 0.005, 0.01 }, { late_bounds[1], late_bounds[2], late_bounds[3] })
    assert.equals(300, late_bounds[14])
    assert.equals(#late_bounds + 1, #r.jobs)
    local function upto(jobs, bound) -- jobs whose lateness is at most `bound`
      local n = 0
      for k = 1, #late_bounds + 1 do
        if k > #late_bounds or late_bounds[k] > bound then break end
        n = n + jobs[k]
      end
      return n
    end
    assert.equals(3, upto(r.jobs, math.huge))
    assert.equals(1, upto(r.jobs, 5)) -- the retry
    assert.equals(2, upto(r.jobs, 60)) -- and the one 10 s late
    assert.is_true(r.seconds >= 110 and r.seconds < 400, tostring(r.seconds))
    -- counted once: again, the same
    assert.same(r.jobs, (histogram(name)).jobs)
    -- on a bound: in that bound's bucket ("le"); started before its
    -- run_at (another host's clock): 0.  Written by hand, exact values.
    local edge = helper.name("m-late-edge")
    local jobs = ('[[1,%q,null,null,"done",1,0,1000.5,0.025,null,3600,995.5],'
      .. '[2,%q,null,null,"done",1,0,1000,0.001,null,3600,1010]]'):format(edge, edge)
    if helper.SQLITE then
      helper.sqlite(("INSERT INTO scheduler_history (min_id, max_id, finished_at, kept_until, worker, jobs)"
        .. " VALUES (1, 2, %f, %f, 'w', %s)"):format(t, t + 3600, helper.literal(jobs)))
    else
      helper.psql(("INSERT INTO scheduler.history (ids, finished_at, kept_until, worker, jobs)"
        .. " VALUES ('[1,2]', now(), now() + interval '1 hour', 'w', %s)"):format(helper.literal(jobs)))
    end
    local e, _, bounds = histogram(edge)
    assert.equals(5, late_bounds[10])
    assert.same({ 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0 }, e.jobs)
    assert.equals(5, e.seconds)
    assert.equals(0.025, bounds[3])
    local d
    for _, x in ipairs(helper.ok(h:durations())) do if x.name == edge then d = x end end
    assert.same({ 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, d.jobs)
    -- leased: a worker process at concurrency 3 (PostgreSQL writes
    -- history from the rows there, not from the batch in memory)
    for _ = 1, 2 do helper.schedule(h, leased, "x", { at = t - 100 }) end
    local w = helper.spawn { WORKER_NAMES = leased, WORKER_CONCURRENCY = 3, WORKER_HISTORY = "1h" }
    assert.is_truthy(helper.wait_for(function() return total_of(h, leased).done == 2 end, 20), w:describe())
    w:kill("TERM")
    assert.is_truthy(w:wait(10), w:describe())
    local l = histogram(leased)
    assert.equals(2, upto(l.jobs, math.huge))
    assert.equals(0, upto(l.jobs, 60))
    assert.is_true(l.seconds >= 200 and l.seconds < 600, tostring(l.seconds))
    -- the text: promtool takes it, the buckets cumulative
    local text = helper.ok(metrics.render(h))
    local ok, out = promtool(text)
    assert.is_true(ok, out .. "\n" .. text)
    local m = "lua_scheduler_job_start_lateness_seconds"
    local lbl = 'name="' .. name:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }) .. '"'
    assert.equals(1, value(text, m .. "_bucket", lbl .. ',le="5"'), text)
    assert.equals(2, value(text, m .. "_bucket", lbl .. ',le="60"'))
    assert.equals(3, value(text, m .. "_bucket", lbl .. ',le="+Inf"'))
    assert.equals(3, value(text, m .. "_count", lbl))
    assert.is_true(value(text, m .. "_sum", lbl) >= 110)
    lbl = 'name="' .. leased .. '"'
    assert.equals(0, value(text, m .. "_bucket", lbl .. ',le="5"'))
    assert.equals(2, value(text, m .. "_bucket", lbl .. ',le="+Inf"'))
    assert.is_truthy(text:find("# TYPE " .. m .. " histogram\n", 1, true))
  end)

  it("`lua-scheduler metrics` prints it once; promtool takes it; no database: exit 1", function()
    local name = helper.name("m-cli") .. '"\\\n'
    helper.schedule(s, name, nil)
    local r = cli.exec({ "metrics" })
    assert.equals(0, r.code, cli.describe(r))
    local ok, out = promtool(r.out)
    assert.is_true(ok, out)
    local l = 'name="' .. name:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }) .. '"'
    assert.equals(1, value(r.out, "lua_scheduler_jobs", l .. ',state="due"'), r.out)
    r = cli.exec({ "metrics", "--database", "sqlite:/nonexistent-dir/x.db" })
    assert.equals(1, r.code, cli.describe(r))
    assert.equals("", r.out)
    -- render raises the API's error (the web server answers 503 with it)
    local bad = helper.new { database = "sqlite:/nonexistent-dir/x.db" }
    helper.raises(function() metrics.render(bad) end, "scheduler: stats:")
  end)
end)
