-- scheduler.snooze(seconds) (issue 16, item 3: "back off"): a listener
-- that returns it has its job run again `seconds` later without counting
-- an attempt and without an error, whatever its max_attempts.  The attacks:
-- a job snoozed again and again on max_attempts 1 (one counted attempt
-- would fail it), a run before its snooze ended, values that only look
-- like a snooze, bad arguments, and a snooze written by a worker whose
-- claim was taken back (it must not touch the claim that took it).  At
-- concurrency 1 (csrc/loop.c) and 3 (the fetcher, concurrent.lua).  Runs
-- are counted by the worker's own record (spec/support/worker.lua appends
-- a line each time a listener is entered, snoozes or returns), not by the
-- scheduler.
local helper = require "spec.helper"
local scheduler = require "scheduler"

-- The records of job `id` with event `event`, in time order.
local function of(proc, event, id)
  local out = proc:events(event, id)
  table.sort(out, function(a, b) return a.time < b.time end)
  return out
end

-- cancel()'s answer, which must not be an error
local function cancel(s, id)
  local ok, err = s:cancel(id)
  assert(err == nil, err)
  return ok
end

describe("snooze", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  for _, concurrency in ipairs { 1, 3 } do
    it(("reruns without counting an attempt, never early, never failing (concurrency %d)"):format(concurrency),
      function()
      local name = helper.name("snooze")
      local SNOOZE = 0.4
      local t = helper.now()
      local ids = helper.ok(s:schedule_many {
        -- snoozed twice, then done: three runs, all attempt 1
        { name, { snooze = SNOOZE, snooze_times = 2 }, { at = t - 5 } },
        -- max_attempts 1, snoozed three times (0: again at once): done, not failed
        { name, { snooze = 0, snooze_times = 3 }, { at = t - 4, max_attempts = 1 } },
        -- snoozed for long: looked at while it waits
        { name, { snooze = 600 }, { at = t - 3, max_attempts = 1 } },
        -- values that only look like a snooze: the job is done
        { name, { forge = "string" }, { at = t - 2, max_attempts = 1 } },
        { name, { forge = "table" }, { at = t - 2, max_attempts = 1 } },
        { name, { forge = "number" }, { at = t - 2, max_attempts = 1 } },
        -- cancelled while it runs, then snoozed
        { name, { sleep = 0.5, snooze = 600 }, { at = t - 1 } },
      })
      local twice, thrice, long, sleepy = ids[1], ids[2], ids[3], ids[7]
      local env = { WORKER_NAMES = name, WORKER_LOG = "stderr" }
      if concurrency > 1 then env.WORKER_CONCURRENCY = concurrency end
      local w = helper.spawn(env)
      -- cancel() while it runs, as for any outcome: it started, so the
      -- worker answers "started" (false), unless its snooze (as a retry
      -- would) made it a waiting job first, which cancel() then removes
      -- (true): either way it ran once, and after true it never runs again
      assert.is_truthy(helper.wait_for(function() return w:events("start", sleepy)[1] end, 20), w:describe())
      local cancelled = cancel(s, sleepy)
      assert.is_truthy(helper.wait_for(function()
        return #w:events("done", twice) == 1 and #w:events("done", thrice) == 1
          and #w:events("done", ids[4]) + #w:events("done", ids[5]) + #w:events("done", ids[6]) == 3
          and #w:events("snooze", long) == 1 and #w:events("snooze", sleepy) == 1
      end, 20), w:describe())

      -- three runs, two snoozes, one done; every one attempt 1; each run
      -- at least the snooze after the one before it (generous: 3/4 of it)
      local starts = of(w, "start", twice)
      assert.equals(3, #starts, w:describe())
      assert.equals(2, #of(w, "snooze", twice))
      for i, r in ipairs(starts) do assert.equals(1, r.attempt, "run " .. i) end
      for i = 2, 3 do
        local gap = starts[i].time - starts[i - 1].time
        assert.is_true(gap >= 0.75 * SNOOZE, ("run %d came %.3f s after the one before"):format(i, gap))
      end
      -- max_attempts 1 and four runs: never failed, all attempt 1
      starts = of(w, "start", thrice)
      assert.equals(4, #starts, w:describe())
      for i, r in ipairs(starts) do assert.equals(1, r.attempt, "run " .. i) end
      -- the forged ones ran once and are done
      for k = 4, 6 do
        assert.equals(1, #of(w, "start", ids[k]), w:describe())
        assert.is_truthy(helper.wait_for(function() return s:job(ids[k]) == nil end, 5), "forged " .. k)
      end
      assert.is_truthy(helper.wait_for(function() return s:job(twice) == nil and s:job(thrice) == nil end, 5))

      -- the long one waits: scheduled, its attempt not counted, no error,
      -- run_at ahead (on PostgreSQL once its batch's transaction committed)
      local job
      assert.is_truthy(helper.wait_for(function()
        job = s:job(long)
        return job and job.run_at > helper.now() + 500
      end, 5), "the long snooze did not land")
      assert.equals("scheduled", job.state)
      assert.equals(0, job.attempt)
      assert.is_nil(job.last_error)
      local waiting = { [long] = true }
      if cancelled then
        assert.is_nil(s:job(sleepy))
      else
        waiting[sleepy] = true
        assert.is_truthy(helper.wait_for(function()
          local j = s:job(sleepy)
          return j and j.run_at > helper.now() + 500
        end, 5), "the snooze after a cancel did not land")
      end
      local rows = helper.ok(s:jobs { name = name, state = "scheduled" })
      local listed = {}
      for _, r in ipairs(rows) do
        listed[r.id] = true
        assert.equals(0, r.attempt)
        assert.is_nil(r.last_error)
      end
      assert.same(waiting, listed)
      local stats = helper.ok(s:stats())
      local row
      for _, r in ipairs(stats) do if r.name == name then row = r end end
      assert.is_truthy(row)
      assert.equals(#rows, row.later)
      assert.equals(0, row.due + row.running + row.failed)
      -- it was run once; nothing ran early
      assert.equals(1, #of(w, "start", long))
      -- the log line says "snoozed" with its delay
      local line = w:log():match("[^\n]*" .. ("job %d ("):format(long):gsub("%p", "%%%0") .. "[^\n]*snoozed[^\n]*")
      assert.is_truthy(line, w:describe())
      assert.is_truthy(helper.contains(line, ("job %d (%s) snoozed on attempt 1 after"):format(long, name)), line)
      assert.is_truthy(helper.contains(line, "; again in 600.0 s"), line)
      assert.is_truthy(helper.contains(line, "] info job"), line)
      -- a waiting snoozed job is cancelled like any waiting job
      assert.is_true(cancel(s, long))
      assert.is_nil(s:job(long))
      assert.equals(not cancelled, cancel(s, sleepy))
      assert.equals(1, #of(w, "start", sleepy))
    end)
  end

  for _, concurrency in ipairs { 1, 3 } do
    it(("reports outcome 'snoozed' and retry_in to a log function (concurrency %d)"):format(concurrency), function()
      local name = helper.name("snoozelog")
      local lines = {}
      local t = helper.new {
        log = function(level, message, fields) lines[#lines + 1] = { level, message, fields } end,
        concurrency = concurrency,
      }
      local calls = 0
      t:on(name, function()
        calls = calls + 1
        if calls == 1 then return t:snooze(0.25) end
        t:stop()
      end)
      local id = helper.schedule(t, name, nil)
      assert.is_true(helper.ok(t:run { seconds = 10 }))
      assert.equals(2, calls)
      local found
      for _, l in ipairs(lines) do
        if l[3] and l[3].job_id == id and l[3].outcome == "snoozed" then found = l end
      end
      assert.is_truthy(found)
      assert.equals("info", found[1])
      assert.equals(0.25, found[3].retry_in)
      assert.equals(1, found[3].attempt)
      assert.equals("job_end", found[3].event)
      assert.is_truthy(helper.contains(found[2], "snoozed on attempt 1"), found[2])
    end)
  end

  it("raises at the call on a bad argument", function()
    local function bad(v, ...)
      helper.raises(function() local x = scheduler.snooze(v) return x end, "snooze", ...)
      helper.raises(function() local x = s:snooze(v) return x end, "snooze", ...)
    end
    -- the error points at the caller's line
    assert.matches("snooze_spec%.lua:%d+: scheduler: snooze:",
      helper.raises(function() local x = scheduler.snooze(-1) return x end))
    bad(nil, "must be a number, got nil")
    bad("30", "must be a number, got string")
    bad({}, "must be a number, got table")
    bad(0 / 0, "must be finite, got NaN")
    bad(math.huge, "must be finite")
    bad(-math.huge, "must be finite")
    bad(-1, "0 or more")
    bad(-0.001, "0 or more")
    bad(30 * 86400 + 1, "at most 2592000")
    bad(1e300, "at most 2592000")
    -- the limits themselves are fine
    assert.equals("scheduler.snooze(0)", tostring(scheduler.snooze(0)))
    assert.equals("scheduler.snooze(2592000)", tostring(s:snooze(30 * 86400)))
    assert.equals("scheduler.snooze(0.25)", tostring(scheduler.snooze(0.25)))
    -- the core's own guard (scheduler.core is not the API, but holds too)
    local core = require "scheduler.core"
    assert.is_false(pcall(core.snooze, "5"))
    assert.is_false(pcall(core.snooze, -1))
    assert.is_false(pcall(core.snooze, 0 / 0))
    assert.is_false(pcall(core.snooze, 1e9))
    -- from a listener: the job fails with that error, counted as an attempt
    local name = helper.name("badsnooze")
    s:on(name, function(p) return scheduler.snooze(p) end, { max_attempts = 1 })
    local id = helper.schedule(s, name, -5)
    assert.equals(1, helper.ok(s:run { drain = true }))
    local job = helper.ok(s:job(id))
    assert.equals("failed", job.state)
    assert.equals(1, job.attempt)
    assert.matches("snooze: seconds must be 0 or more, got %-5", job.last_error)
    -- a snooze value is opaque
    assert.equals("scheduler.snooze", getmetatable(scheduler.snooze(1)))
    assert.is_false(pcall(setmetatable, scheduler.snooze(1), {}))
  end)

  for _, concurrency in ipairs { 1, 3 } do
    it(("written after the claim was taken back does not land (concurrency %d)"):format(concurrency), function()
      local name = helper.name("stalesnooze")
      -- as crash_spec's stale write: A blocks in C on a FIFO, is frozen
      -- past its lease, B takes the job and blocks on its own FIFO; then A
      -- returns snooze(600) for a claim that is no longer its own
      local gate_a, gate_b = helper.tmpdir() .. "/gate-a", helper.tmpdir() .. "/gate-b"
      assert(os.execute("mkfifo " .. helper.shquote(gate_a) .. " " .. helper.shquote(gate_b)))
      local t = helper.now()
      local ids = helper.ok(s:schedule_many {
        { name, { fifo = true, snooze = 600 }, { at = t - 3 } }, { name, 2, { at = t - 2 } },
      })
      local extra = concurrency > 1 and { WORKER_CONCURRENCY = concurrency } or {}
      local env_a = { WORKER_NAMES = name, WORKER_LEASE = 1, WORKER_FIFO = gate_a }
      local env_b = { WORKER_NAMES = name, WORKER_LEASE = 30, WORKER_FIFO = gate_b }
      for k, v in pairs(extra) do env_a[k], env_b[k] = v, v end
      local a = helper.spawn(env_a)
      assert.is_truthy(helper.wait_for(function() return a:events("start", ids[1])[1] end, 10), a:describe())
      helper.sleep(0.5) -- PostgreSQL at concurrency 1: the batch is settled into leases
      assert.is_true(a:kill("STOP"))
      local b = helper.spawn(env_b)
      local rerun = helper.wait_for(function() return b:events("start", ids[1])[1] end, 10)
      assert.is_truthy(rerun, helper.describe_all { a, b })
      assert.is_true(a:kill("CONT"))
      assert.is_true(helper.open_fifo(gate_a), a:describe())
      assert.is_truthy(helper.wait_for(function() return a:events("snooze", ids[1])[1] end, 10), a:describe())
      -- A's outcome has had time to be written (PostgreSQL at concurrency
      -- 1: B holds the job in its claim transaction for its first second)
      helper.sleep(math.max(1, rerun.time + 1.5 - helper.now()))
      local job = helper.ok(s:job(ids[1]))
      assert.equals("running", job.state, "A's stale snooze touched B's claim")
      local rows = helper.ok(s:jobs { name = name, state = "running" })
      assert.equals(1, #rows)
      assert.matches(":" .. b:pid(), rows[1].locked_by, 1, true)
      -- B's own snooze lands: waiting, its attempt given back
      assert.is_true(helper.open_fifo(gate_b), b:describe())
      assert.is_truthy(helper.wait_for(function() return b:events("snooze", ids[1])[1] end, 10), b:describe())
      assert.is_truthy(helper.wait_for(function()
        job = s:job(ids[1])
        return job and job.state == "scheduled" and job.run_at > helper.now() + 500
      end, 10), b:describe())
      assert.equals(rerun.attempt - 1, job.attempt)
      assert.equals(1, #a:events("start", ids[1]))
      assert.equals(1, #b:events("start", ids[1]))
    end)
  end
end)
