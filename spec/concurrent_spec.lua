-- Listeners that wait without blocking (issue 18): a worker with
-- `concurrency` above 1 runs each job in a coroutine of the host's event
-- loop (real cqueues and luv loops), never more at once than the limit,
-- loses nothing when killed with its jobs in flight, waits for them when
-- stopped, retries listeners that fail or time out by the usual policy,
-- and never holds up the loop's own timers.  Executions are counted by a
-- record of our own (a file each listener appends to), not by the
-- scheduler's.
local helper = require "spec.helper"
local cqueues = require "cqueues"
local most_at_once = require "spec.support.overlap"

--- An append-only record of listener events: "<id> <event> <time>".
local function new_record()
  local path = helper.tmpdir() .. "/record"
  local f = assert(io.open(path, "a"))
  f:setvbuf("no")
  local rec = { path = path }
  function rec.add(id, event) f:write(("%d %s %.6f\n"):format(id, event, helper.now())) end
  function rec.read()
    local out = {}
    for line in (helper.read_file(path) or ""):gmatch("[^\n]+") do
      local id, event, t = line:match("^(%d+) (%S+) (%S+)$")
      out[#out + 1] = { id = tonumber(id), event = event, t = tonumber(t) }
    end
    return out
  end
  return rec
end

--- Most "start"s without their "end" at any moment (spec/support/overlap.lua:
-- an end and a start at the same instant are a slot freed, then taken).
local function overlap(events)
  local open, intervals = {}, {}
  for _, e in ipairs(events) do -- a run's start is recorded before its end
    if e.event == "start" then
      open[e.id] = e.t
    elseif e.event == "end" and open[e.id] then
      intervals[#intervals + 1] = { open[e.id], e.t }
      open[e.id] = nil
    end
  end
  for _, t in pairs(open) do intervals[#intervals + 1] = { t, math.huge } end
  return most_at_once(intervals)
end

local function per_id(events, event)
  local n = {}
  for _, e in ipairs(events) do
    if e.event == event then n[e.id] = (n[e.id] or 0) + 1 end
  end
  return n
end

--- Start another client that holds a lock for `seconds`: on PostgreSQL,
-- psql runs `sql` (which takes it) then sleeps; on SQLite, sqlite3 holds
-- the file's write lock.  Returns once the lock is held (under load psql
-- can take longer to start than a fixed sleep allows), its output going
-- to dir/out.
local function hold_lock(sql, seconds, dir)
  local mark = helper.name("holder"):gsub("%W", "_")
  if helper.POSTGRESQL then
    helper.sh(("psql -qAt -c %s >%s/out 2>&1 &"):format(helper.shquote(
      ("BEGIN; %s; SELECT pg_sleep(%g) AS %s; ROLLBACK;"):format(sql, seconds, mark)), dir))
    assert.is_truthy(helper.wait_for(function()
      -- its sleep has begun, so its lock is taken (this query's own text
      -- names the mark too, but it is not sleeping)
      return helper.psql_int(("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        .. " AND query LIKE '%%%s%%'"):format(mark)) == 1
    end, 20, 0.02), "the other client never held its lock: " .. tostring(helper.read_file(dir .. "/out")))
  else
    helper.sh(("(echo '.timeout 5000'; echo 'BEGIN IMMEDIATE;'; sleep %g; echo 'ROLLBACK;') | sqlite3 %s >%s/out 2>&1 &")
      :format(seconds, helper.shquote(helper.sqlite_path()), dir))
    assert.is_truthy(helper.wait_for(function()
      return not pcall(helper.sqlite, "BEGIN IMMEDIATE; ROLLBACK;", { timeout = 0 })
    end, 20, 0.02), "the other client never held the write lock: " .. tostring(helper.read_file(dir .. "/out")))
  end
end

local function schedule_list(s, name, n, payload)
  local list = {}
  for i = 1, n do list[i] = { name, payload or { i = i } } end
  return helper.ok(s:schedule_many(list))
end

describe("concurrent listeners", function()
  after_each(function() helper.cleanup() end)

  it("never run more jobs at once than the limit, in a cqueues loop, each once", function()
    local name = helper.name("conc")
    local rec = new_record()
    local s = helper.new { concurrency = 20 }
    s:on(name, function(_, job)
      rec.add(job.id, "start")
      cqueues.sleep(0.02 + (job.id % 5) * 0.01)
      rec.add(job.id, "end")
    end)
    local ids = schedule_list(s, name, 300)
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    cq:wrap(function()
      local deadline = cqueues.monotime() + 60
      while helper.count_jobs(name) > 0 and cqueues.monotime() < deadline do cqueues.sleep(0.05) end
      s:stop()
    end)
    assert(cq:loop())
    local events = rec.read()
    local starts, ends = per_id(events, "start"), per_id(events, "end")
    for _, id in ipairs(ids) do
      assert.are.equal(1, starts[id], "job " .. id .. " started once")
      assert.are.equal(1, ends[id], "job " .. id .. " ended once")
    end
    local most = overlap(events)
    assert.is_true(most <= 20, "at most 20 at once, saw " .. most)
    assert.is_true(most > 10, "they ran concurrently (at most " .. most .. " at once)")
    assert.are.equal(0, helper.count_jobs(name))
  end)

  it("never run more jobs of a name at once than its own limit, and fill the rest with others", function()
    local slow, other = helper.name("slow"), helper.name("other")
    local rec = new_record()
    local s = helper.new { concurrency = 12 }
    local now_slow, most_slow = 0, 0
    s:on(slow, function(_, job)
      now_slow = now_slow + 1
      if now_slow > most_slow then most_slow = now_slow end
      rec.add(job.id, "start")
      cqueues.sleep(0.05)
      rec.add(job.id, "end")
      now_slow = now_slow - 1
    end, { concurrency = 3 })
    s:on(other, function(_, job)
      rec.add(job.id, "start")
      cqueues.sleep(0.05)
      rec.add(job.id, "end")
    end)
    local ids = schedule_list(s, slow, 60)
    for _, id in ipairs(schedule_list(s, other, 120)) do ids[#ids + 1] = id end
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    cq:wrap(function()
      local deadline = cqueues.monotime() + 60
      while (helper.count_jobs(slow) > 0 or helper.count_jobs(other) > 0) and cqueues.monotime() < deadline do
        cqueues.sleep(0.05)
      end
      s:stop()
    end)
    assert(cq:loop())
    local events = rec.read()
    local ends = per_id(events, "end")
    for _, id in ipairs(ids) do assert.are.equal(1, ends[id], "job " .. id .. " ran once") end
    assert.is_true(most_slow <= 3, "at most 3 of the limited name at once, saw " .. most_slow)
    assert.are.equal(3, most_slow)
    local most = overlap(events)
    assert.is_true(most <= 12 and most > 6, "the others filled the worker: at most " .. most .. " at once")
  end)

  -- The fetcher thread starts before run() hands it the names, and a
  -- listener may be added while it runs: either way its due jobs must be
  -- claimed at once, not at a time reckoned without them (up to the 15 s
  -- fallback look, as seen in CI).
  it("claim a name's due jobs at once when the worker learns the name while it runs", function()
    local first, later = helper.name("first"), helper.name("later")
    local rec = new_record()
    local s = helper.new { concurrency = 2 }
    s:on(first, function(_, job) rec.add(job.id, "start") end)
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    local id, added
    cq:wrap(function()
      cqueues.sleep(0.5) -- idle: it looked ahead without `later`
      id = helper.schedule(s, later, 1) -- due now; its wake-up finds no listener for it
      cqueues.sleep(0.3)
      added = helper.now()
      s:on(later, function(_, job) rec.add(job.id, "start") end)
      local deadline = cqueues.monotime() + 20
      while not per_id(rec.read(), "start")[id] and cqueues.monotime() < deadline do cqueues.sleep(0.02) end
      s:stop()
    end)
    assert(cq:loop())
    local started
    for _, e in ipairs(rec.read()) do
      if e.id == id and e.event == "start" then started = e.t end
    end
    assert.is_truthy(started, "the job of the name added while running never started")
    assert.is_true(started - added < 3, ("it started %.2f s after on()"):format(started - added))
  end)

  it("claim the jobs due when a worker starts at once, every time (the thread's first turn races run())", function()
    local name = helper.name("atstart")
    local s = helper.new()
    for i = 1, 6 do
      local id = helper.schedule(s, name, i)
      local w = helper.spawn { WORKER_NAMES = name, WORKER_CONCURRENCY = 2 }
      assert.is_truthy(w:wait_file("ready"), w:describe())
      local e = helper.wait_for(function() return w:events("start", id)[1] end, 5)
      assert.is_truthy(e, ("run %d: the due job did not start within 5 s of the worker's start\n"):format(i)
        .. w:describe())
      w:kill("TERM")
      assert.is_truthy(w:wait(10), w:describe())
    end
  end)

  it("run in a luv loop, resumed by the listener's own callbacks", function()
    local uv = require "luv"
    local name = helper.name("luv")
    local rec = new_record()
    local s = helper.new { concurrency = 10 }
    s:on(name, function(_, job)
      rec.add(job.id, "start")
      local co = coroutine.running()
      local t = uv.new_timer()
      t:start(30, 0, function()
        t:close()
        assert(coroutine.resume(co))
      end)
      coroutine.yield()
      rec.add(job.id, "end")
    end)
    local ids = schedule_list(s, name, 60)
    require("scheduler.luv").attach(s)
    local watch = uv.new_timer()
    local deadline = helper.now() + 60
    watch:start(50, 50, function()
      if helper.count_jobs(name) == 0 or helper.now() > deadline then
        watch:close()
        s:stop()
      end
    end)
    uv.run()
    local events = rec.read()
    local ends = per_id(events, "end")
    for _, id in ipairs(ids) do assert.are.equal(1, ends[id], "job " .. id .. " ended once") end
    local most = overlap(events)
    assert.is_true(most <= 10 and most > 5, "between 6 and 10 at once, saw " .. most)
  end)

  it("wait for every job in flight when stopped, and hand back the rest unattempted", function()
    local name = helper.name("stop")
    local rec = new_record()
    local s = helper.new { concurrency = 25 }
    local started = 0
    s:on(name, function(_, job)
      rec.add(job.id, "start")
      started = started + 1
      cqueues.sleep(0.3)
      rec.add(job.id, "end")
    end)
    schedule_list(s, name, 100)
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    cq:wrap(function()
      while started < 25 do cqueues.sleep(0.01) end
      s:stop()
    end)
    assert(cq:loop())
    local events = rec.read()
    local starts, ends = per_id(events, "start"), per_id(events, "end")
    local n_start, n_end = 0, 0
    for id in pairs(starts) do
      n_start = n_start + 1
      assert.are.equal(1, ends[id], "job " .. id .. " ran to its end")
    end
    for _ in pairs(ends) do n_end = n_end + 1 end
    assert.are.equal(n_start, n_end)
    assert.are.equal(25, n_start, "only the first 25 started")
    -- the rest wait, untouched: no attempt counted
    local left = s:jobs { name = name }
    assert.are.equal(75, #left)
    for _, j in ipairs(left) do
      assert.are.equal("scheduled", j.state)
      assert.are.equal(0, j.attempt)
    end
  end)

  it("retry a listener that raises or runs past its time limit, by the usual policy", function()
    local name = helper.name("retry")
    local rec = new_record()
    local s = helper.new { concurrency = 5, backoff = function() return 0 end, max_attempts = 2 }
    s:on(name, function(payload, job)
      rec.add(job.id, "start")
      if payload.kind == "raise" then error("boom " .. job.attempt) end
      if payload.kind == "wait" then cqueues.sleep(30) end -- waits past its limit
      if payload.kind == "spin" then while true do end end -- never yields
      rec.add(job.id, "end")
    end, { timeout = 0.3 })
    local raise = helper.schedule(s, name, { kind = "raise" })
    local wait = helper.schedule(s, name, { kind = "wait" })
    local spin = helper.schedule(s, name, { kind = "spin" })
    local fine = helper.schedule(s, name, { kind = "fine" })
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    cq:wrap(function()
      local deadline = cqueues.monotime() + 30
      while cqueues.monotime() < deadline do
        local failed = s:jobs { name = name, state = "failed" }
        if #failed == 3 and helper.count_jobs(name) == 3 then break end
        cqueues.sleep(0.05)
      end
      s:stop()
    end)
    assert(cq:loop())
    local starts = per_id(rec.read(), "start")
    for _, id in ipairs { raise, wait, spin } do
      assert.are.equal(2, starts[id], "job " .. id .. " ran twice (max_attempts 2)")
      local j = s:job(id)
      assert.are.equal("failed", j.state)
      assert.are.equal(2, j.attempt)
    end
    assert.is_truthy(s:job(raise).last_error:find("boom 2", 1, true))
    assert.is_truthy(s:job(wait).last_error:find("timeout", 1, true))
    assert.is_truthy(s:job(spin).last_error:find("timeout", 1, true))
    assert.are.equal(1, starts[fine])
    assert.is_nil(s:job(fine))
  end)

  it("keep the host loop's own timers on time while jobs run", function()
    local name = helper.name("timers")
    local s = helper.new { concurrency = 50 }
    local done = 0
    s:on(name, function()
      cqueues.sleep(0.02)
      done = done + 1
    end)
    schedule_list(s, name, 3000)
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    local lates = {}
    cq:wrap(function()
      -- the program's own timer, every 5 ms while the jobs run (counted
      -- in the listener: no blocking call in the loop)
      local deadline = cqueues.monotime() + 60
      while done < 3000 and cqueues.monotime() < deadline do
        local t0 = cqueues.monotime()
        cqueues.sleep(0.005)
        lates[#lates + 1] = cqueues.monotime() - t0 - 0.005
      end
      s:stop()
    end)
    assert(cq:loop())
    assert.are.equal(3000, done)
    assert.are.equal(0, helper.count_jobs(name))
    table.sort(lates)
    local p99 = lates[math.ceil(#lates * 0.99)]
    assert.is_true(#lates > 100, "the timer fired while jobs ran (" .. #lates .. " times)")
    -- issue 18: <= 5 ms at p99; generous here for a loaded CI machine
    assert.is_true(p99 <= 0.005 * 5, ("timer p99 %.1f ms late"):format(p99 * 1000))
  end)

  it("let schedule() in the loop's coroutines wait for the database without blocking the loop", function()
    local name = helper.name("sched")
    local s = helper.new { concurrency = 4 }
    local ran, child = {}, nil
    s:on(name, function(payload, job)
      ran[#ran + 1] = job.id
      if payload.spawn then
        -- from a listener's coroutine: its own job waits on the lock below
        local id, err = s:schedule(name, { n = "child" }, { key = payload.spawn })
        child = id or err
      end
    end)
    -- another client holds the write that schedule() needs for 3 s: an
    -- uncommitted job with the same key (PostgreSQL waits on the unique
    -- index), or the file's write lock (SQLite)
    helper.ok(s:schema_version()) -- the tables exist before the other client uses them
    local key = helper.name("key")
    local dir = helper.tmpdir()
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    local ticks, waiting, result = 0, false, nil
    cq:wrap(function()
      hold_lock(("INSERT INTO scheduler.jobs (name, key) VALUES ('%s-other', '%s')"):format(name, key), 3, dir)
      waiting = true
      -- from the host loop's own code
      local t0 = cqueues.monotime()
      result = table.pack(s:schedule(name, { spawn = key .. "-2" }, { key = key }))
      result.took = cqueues.monotime() - t0
      waiting = false
      local deadline = cqueues.monotime() + 20
      while #ran < 2 and cqueues.monotime() < deadline do cqueues.sleep(0.02) end
      s:stop()
    end)
    local seen_waiting = 0
    cq:wrap(function()
      while s._flight do
        cqueues.sleep(0.01)
        ticks = ticks + 1
        if waiting then seen_waiting = seen_waiting + 1 end
      end
    end)
    assert(cq:loop())
    assert.is_true(math.type(result[1]) == "integer", "schedule() returned an id: " .. tostring(result[2]))
    assert.is_true(seen_waiting >= 20, ("the loop ran on while schedule() waited (%d ticks in %.3f s; holder: %s)"):format(seen_waiting,
      result.took, tostring(helper.read_file(dir .. "/out"))))
    assert.are.equal(2, #ran, "both jobs ran: " .. #ran .. " " .. tostring(child))
  end)

  it("stop while the worker's claim waits for another client's lock, and return once it is released", function()
    -- the claim a worker makes when it starts waits on a lock another
    -- client holds for 2 s (SQLite: the file's write lock; PostgreSQL: an
    -- exclusive lock on the jobs table); stop() comes while it waits.  Once
    -- the claim returns, the loop must learn that the worker settled (the
    -- end of a claim did not signal it, and cq:loop() waited forever)
    local name = helper.name("stopclaim")
    local s = helper.new { concurrency = 4 }
    s:on(name, function() end)
    helper.ok(s:schema_version()) -- the tables exist before the other client uses them
    local dir = helper.tmpdir()
    hold_lock("LOCK TABLE scheduler.jobs IN ACCESS EXCLUSIVE MODE", 2, dir)
    local cq = cqueues.new()
    require("scheduler.cqueues").attach(s, cq)
    local t0 = cqueues.monotime()
    cq:wrap(function()
      cqueues.sleep(0.3) -- the claim waits
      s:stop()
    end)
    local deadline = t0 + 20
    while not cq:empty() and cqueues.monotime() < deadline do assert(cq:step(0.1)) end
    local took = cqueues.monotime() - t0
    assert.is_true(cq:empty(), ("the loop ended after stop() (still running after %.1f s; holder: %s)"):format(took,
      tostring(helper.read_file(dir .. "/out"))))
    assert.is_nil(s._flight)
  end)

  it("find a job that crashes its worker among 16 in flight by halves, charging no other", function()
    local name = helper.name("halves")
    local s = helper.new()
    local list = {}
    for i = 1, 16 do list[i] = { name, { i = i }, { max_attempts = 1 } } end
    list[11] = { name, { i = 11, exit = 3, wait = 0 }, { max_attempts = 2 } }
    local ids = helper.ok(s:schedule_many(list))
    local poison = ids[11]
    -- a supervisor of our own: a new worker each time one dies
    local procs, deaths = {}, 0
    local deadline = helper.now() + 90
    while helper.now() < deadline do
      local left = helper.count_jobs(name)
      local j = s:job(poison)
      if left == 1 and j and j.state == "failed" then break end
      local p = procs[#procs]
      if not p or p:exit_code() ~= nil then
        if p then deaths = deaths + 1 end
        procs[#procs + 1] = helper.spawn { WORKER_NAMES = name, WORKER_CONCURRENCY = 16, WORKER_WAIT = 0.3,
          WORKER_LEASE = 1 }
      end
      helper.sleep(0.05)
    end
    local j = s:job(poison)
    assert.is_truthy(j and j.state == "failed", helper.describe_all(procs))
    assert.are.equal(2, j.attempt, "failed after its own 2 attempts")
    assert.are.equal(1, helper.count_jobs(name), "every innocent ended")
    local runs, by_id = {}, {}
    for _, p in ipairs(procs) do
      for _, r in ipairs(p:results()) do
        if r.event == "start" then
          runs[#runs + 1] = r
          by_id[r.id] = by_id[r.id] or {}
          table.insert(by_id[r.id], r)
        end
      end
    end
    for i, id in ipairs(ids) do
      if id ~= poison then
        for _, r in ipairs(by_id[id] or {}) do
          assert.are.equal(1, r.attempt, "innocent " .. i .. " was never charged")
        end
        assert.is_truthy(by_id[id], "innocent " .. i .. " ran")
      end
    end
    -- 16 suspects, then halves of 8, 4, 2, 1 (at most one crash each when
    -- the poison is in the half that runs first, two with the other half
    -- first), then its 2 attempts alone: far fewer than 16 runs alone
    assert.is_true(deaths >= 3 and deaths <= 12, "worker deaths: " .. deaths)
    -- and the innocents of a half ran together, in quarantine
    local together = 0
    for _, p in ipairs(procs) do
      local open, most = 0, 0
      for _, r in ipairs(p:results()) do
        open = open + (r.event == "start" and 1 or r.event == "done" and -1 or 0)
        if open > most then most = open end
      end
      if p ~= procs[1] and most > together then together = most end
    end
    assert.is_true(together > 1, "suspects ran together after the first crash (at most " .. together .. ")")
  end)

  it("lose no job when the worker is killed with 200 in flight", function()
    local name = helper.name("kill")
    local s = helper.new()
    local ids = schedule_list(s, name, 200)
    local w1 = helper.spawn { WORKER_NAMES = name, WORKER_CONCURRENCY = 200, WORKER_WAIT = 60, WORKER_LEASE = 2 }
    assert.is_truthy(helper.wait_for(function() return #w1:events("start") >= 200 end, 30), w1:describe())
    w1:kill("KILL")
    w1:wait(10)
    local w2 = helper.spawn { WORKER_NAMES = name, WORKER_CONCURRENCY = 200, WORKER_LEASE = 2 }
    assert.is_truthy(helper.wait_for(function() return helper.count_jobs(name) == 0 end, 60), w2:describe())
    local done = helper.tally(w2:events("done"), "id")
    for _, id in ipairs(ids) do
      assert.are.equal(1, done[id], "job " .. id .. " ran to its end once after the kill")
    end
    -- nothing was charged for the crash: they ran again at attempt 1
    for _, r in ipairs(w2:events("done")) do assert.are.equal(1, r.attempt) end
  end)
end)
