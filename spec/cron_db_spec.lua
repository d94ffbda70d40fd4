-- Recurring schedules against the database: declaration, one job per slot
-- across workers, catch-up policies after downtime.
local helper = require "spec.helper"

local function jobs_of(name)
  return helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE name = %s"):format(helper.literal(name)))
end

-- SQLite stores times as Unix seconds (REAL) on the host clock: the
-- expression for "now" there.
local SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

--- Pretend no worker ran since `seconds` ago: the schedule's next slot is then
--- that far in the past.
local function rewind(id, seconds)
  if helper.SQLITE then
    helper.sql(("UPDATE scheduler.crons SET next_at = CAST(%s / 60 AS INTEGER) * 60 - %d WHERE id = %s")
      :format(SQLITE_NOW, seconds, helper.literal(id)))
  else
    helper.psql(("UPDATE scheduler.crons SET next_at = date_trunc('minute', now()) - %d * interval '1 second'"
      .. " WHERE id = %s"):format(seconds, helper.literal(id)))
  end
end

describe("cron schedules", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(function() helper.cleanup() end)

  it("are declared, listed, updated and removed", function()
    local id, name = helper.name("decl"), helper.name("Decl")
    assert.is_true(helper.ok(s:cron(id, "0 9 * * mon-fri", name, { a = 1 }, { tz = "Europe/Paris" })))
    local found
    for _, c in ipairs(helper.ok(s:crons())) do
      if c.id == id then found = c end
    end
    assert.is_table(found)
    assert.are.equal("0 9 * * mon-fri", found.expr)
    assert.are.equal("Europe/Paris", found.tz)
    assert.are.equal(name, found.name)
    assert.are.same({ a = 1 }, found.payload)
    assert.is_true(found.catch_up)
    assert.is_true(found.next_at > helper.now())
    -- the next slot is a weekday 09:00 in Paris
    local expected = helper.scheduler.next_times("0 9 * * mon-fri", 1, { tz = "Europe/Paris" })[1]
    assert.are.equal(expected, found.next_at)

    -- declaring again with the same expression keeps next_at (even if it is
    -- in the past: the missed slot is caught up), a new expression resets it
    local now = helper.SQLITE and SQLITE_NOW or "now()"
    local day_ago = helper.SQLITE and (SQLITE_NOW .. " - 86400") or "now() - interval '1 day'"
    helper.sql(("UPDATE scheduler.crons SET next_at = %s WHERE id = %s"):format(day_ago, helper.literal(id)))
    assert.is_true(helper.ok(s:cron(id, "0 9 * * mon-fri", name, { a = 2 }, { tz = "Europe/Paris" })))
    local kept = helper.sql_int(("SELECT count(*) FROM scheduler.crons WHERE id = %s AND next_at < %s")
      :format(helper.literal(id), now))
    assert.are.equal(1, kept)
    assert.is_true(helper.ok(s:cron(id, "0 10 * * *", name, nil)))
    for _, c in ipairs(helper.ok(s:crons())) do
      if c.id == id then
        assert.are.equal("0 10 * * *", c.expr)
        assert.are.equal("UTC", c.tz)
        assert.is_true(c.next_at > helper.now())
      end
    end

    assert.is_true(s:uncron(id))
    assert.is_false(s:uncron(id))
  end)

  it("turn each slot into one job that runs on time with the payload", function()
    local id, name = helper.name("every"), helper.name("Every")
    local seen = {}
    s:on(name, function(payload, job)
      seen[#seen + 1] = { payload = payload, key = job.key, run_at = job.run_at, at = helper.now() }
    end)
    assert.is_true(helper.ok(s:cron(id, "* * * * * *", name, { hello = "world" })))
    s:run { seconds = 2.6 }
    assert.is_true(#seen >= 2 and #seen <= 4, "runs: " .. #seen)
    local keys = {}
    for i, r in ipairs(seen) do
      assert.are.same({ hello = "world" }, r.payload)
      assert.are.equal(math.floor(r.run_at), r.run_at) -- slots are whole seconds
      assert.are.equal(("cron:%s@%d"):format(id, r.run_at), r.key)
      assert.is_nil(keys[r.key])
      keys[r.key] = true
      if i > 1 then assert.are.equal(1, r.run_at - seen[i - 1].run_at) end
      -- on time: not before the slot, and well within a second after it
      assert.is_true(r.at >= r.run_at - 0.01 and r.at < r.run_at + 0.5, "lateness " .. (r.at - r.run_at))
    end
    s:uncron(id)
  end)

  it("yield one job per slot when three workers declare the same schedule #slow", function()
    local id, name = helper.name("shared"), helper.name("Shared")
    local procs = {}
    for i = 1, 3 do
      procs[i] = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "seconds", WORKER_SECONDS = 4,
        WORKER_CRON = id .. " * * * * * *", WORKER_LOG = "false" }
    end
    for _, p in ipairs(procs) do assert.is_truthy(p:wait(15), p:describe()) end
    for _, p in ipairs(procs) do assert.are.equal(0, p:exit_code(), p:describe()) end
    local starts = helper.all_results(procs, "start")
    assert.is_true(#starts >= 2, "slots run: " .. #starts)
    local per_job = helper.tally(starts, "id")
    for jid, n in pairs(per_job) do assert.are.equal(1, n, "job " .. tostring(jid)) end
    -- and one job per slot: every job of this schedule has a distinct key
    local dup = helper.sql_int(("SELECT count(*) FROM (SELECT key FROM scheduler.jobs WHERE name = %s"
      .. " GROUP BY key HAVING count(*) > 1) d"):format(helper.literal(name)))
    assert.are.equal(0, dup)
    s:uncron(id)
  end)

  describe("after downtime", function()
    it("run the latest missed slot once by default", function()
      local id, name = helper.name("catch"), helper.name("Catch")
      local runs = {}
      s:on(name, function(_, job) runs[#runs + 1] = job.run_at end)
      -- in a minute's last seconds the latest slot is the one about to come
      -- (slots within a second become jobs ahead of time): keep clear of it
      local into = helper.now() % 60
      if into > 55 then helper.sleep(61 - into) end
      assert.is_true(helper.ok(s:cron(id, "* * * * *", name, nil)))
      rewind(id, 3600)
      s:run { drain = true }
      assert.are.equal(1, #runs)
      -- the latest slot, not the first missed one
      assert.is_true(runs[1] > helper.now() - 61, "ran slot " .. runs[1])
      -- and the schedule moved on to a future slot
      for _, c in ipairs(helper.ok(s:crons())) do
        if c.id == id then assert.is_true(c.next_at > helper.now()) end
      end
      s:uncron(id)
    end)

    it("skip missed slots with catch_up = false, and say so", function()
      local id, name = helper.name("skip"), helper.name("Skip")
      local logs = {}
      local q <close> = helper.new { log = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end }
      local runs = 0
      q:on(name, function() runs = runs + 1 end)
      -- a yearly job whose slot (this 1 January) no worker ran
      assert.is_true(helper.ok(q:cron(id, "0 0 1 1 *", name, nil, { catch_up = false })))
      if helper.SQLITE then
        helper.sql(("UPDATE scheduler.crons SET next_at = CAST(strftime('%%s', 'now', 'start of year') AS REAL)"
          .. " WHERE id = %s"):format(helper.literal(id)))
      else
        helper.psql(("UPDATE scheduler.crons SET next_at = date_trunc('year', now() AT TIME ZONE 'UTC')"
          .. " AT TIME ZONE 'UTC' WHERE id = %s"):format(helper.literal(id)))
      end
      q:run { drain = true }
      assert.are.equal(0, runs)
      assert.are.equal(0, jobs_of(name))
      local said = false
      for _, l in ipairs(logs) do
        if l:find("skipped", 1, true) and l:find(id, 1, true) then said = true end
      end
      assert.is_true(said, table.concat(logs, "\n"))
      q:uncron(id)
    end)

    it("run every slot of the backfill window", function()
      local id, name = helper.name("backfill"), helper.name("Backfill")
      local runs = {}
      s:on(name, function(_, job) runs[#runs + 1] = job.run_at end)
      assert.is_true(helper.ok(s:cron(id, "* * * * *", name, nil, { backfill = 600 })))
      rewind(id, 3600)
      s:run { drain = true }
      -- the minute slots of the last 10 minutes (10 or 11 depending on where
      -- in the minute we are), oldest first, each once
      assert.is_true(#runs >= 10 and #runs <= 11, "runs: " .. #runs)
      for i = 2, #runs do assert.are.equal(60, runs[i] - runs[i - 1]) end
      s:uncron(id)
    end)
  end)

  describe("reject", function()
    it("an invalid expression, quoting it and naming the field", function()
      local ok, err = pcall(s.cron, s, "bad", "*/0 * * * *", "X")
      assert.is_false(ok)
      assert.matches('"%*/0 %* %* %* %*"', err)
      assert.matches("minute", err)
    end)

    it("an unknown time zone, an unknown option and bad arguments", function()
      assert.has_error(function() s:cron("z", "* * * * *", "X", nil, { tz = "Mars/Olympus" }) end)
      assert.has_error(function() s:cron("z", "* * * * *", "X", nil, { every = 1 }) end)
      assert.has_error(function() s:cron("", "* * * * *", "X") end)
      assert.has_error(function() s:cron("z", "* * * * *", "") end)
      assert.has_error(function() s:cron("z", "* * * * *", "X", nil, { backfill = -1 }) end)
      assert.has_error(function() s:uncron(42) end)
    end)
  end)

  it("next_times gives the next fire times", function()
    local t = helper.scheduler.next_times("0 0 1 1 *", 2, { from = 1767225600 }) -- 2026-01-01T00:00Z
    assert.are.same({ 1798761600, 1830297600 }, t)
  end)
end)
