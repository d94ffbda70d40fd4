-- Pause and resume a job name (issue 16, item 1).  The attack: pause a
-- name while a worker holds a backlog of it (PostgreSQL's held batch at
-- concurrency 1, the fetcher's claimed jobs at concurrency > 1): no job of
-- it starts more than a second or so after pause() returned, other names
-- keep running, a running job finishes, jobs scheduled meanwhile wait;
-- resume runs every job exactly once, at once.  Starts are counted by the
-- worker's own record (spec/support/worker.lua appends a line each time a
-- listener is entered), not by the scheduler.  Then: the pause outlives a
-- worker's restart, an idle worker does not spin on due paused jobs, and
-- the commands pause, resume, stats and purge.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local json = require "dkjson"

-- How long after pause() returned a job of the name may still start: the
-- worker looks every second (PAUSE_LOOK), plus a job in hand; generous
-- (measured: 0.7 s at most; a loaded CI machine may starve the worker).
local BOUND = 2.5

local function decode(s)
  local v, _, err = json.decode(s, 1, json.null)
  if err then error("not JSON: " .. err .. "\n" .. s, 2) end
  return v
end

-- Starts per job id, and the latest start among `ids` (a set).
local function starts(proc, ids)
  local per, latest = {}, -math.huge
  for _, r in ipairs(proc:events("start")) do
    if ids[r.id] then
      per[r.id] = (per[r.id] or 0) + 1
      if r.time > latest then latest = r.time end
    end
  end
  return per, latest
end

-- The worker said nothing amiss (a statement that fails is retried,
-- and would only show as a warning).
local function quiet(proc)
  local log = proc:log()
  assert.is_nil(log:find("warn", 1, true) or log:find("error", 1, true), proc:describe())
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- Schedule list (of { name, payload }) in one transaction; returns a set
-- of the ids per name.
local function schedule_all(s, list)
  local ids = helper.ok(s:schedule_many(list))
  local by = {}
  for i, id in ipairs(ids) do
    local name = list[i][1]
    by[name] = by[name] or {}
    by[name][id] = true
  end
  return by
end

describe("pause", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  for _, concurrency in ipairs { 1, 3 } do
    it(("stops a name on a worker in the middle of its backlog (concurrency %d); resume runs each job once")
      :format(concurrency), function()
      local s = helper.new()
      local P, Q = helper.name("paused"), helper.name("other")
      -- quick jobs first: the worker sizes its batches to its listeners'
      -- measured time, so the slow ones after them come in large batches
      -- (held by the claim's transaction on PostgreSQL) that run for
      -- seconds: the pause comes while it holds many
      local list = {}
      for i = 1, 200 do list[#list + 1] = { P, { i = i, sleep = 0 } } end
      for i = 1, 240 do
        list[#list + 1] = { P, { i = i, sleep = 0.005 } }
        if i % 4 == 0 then list[#list + 1] = { Q, { i = i, sleep = 0.005 } } end
      end
      local ids = schedule_all(s, list)
      local env = { WORKER_NAMES = P .. "," .. Q, WORKER_LOG = "stderr" }
      if concurrency > 1 then env.WORKER_CONCURRENCY = concurrency end
      local w = helper.spawn(env)
      assert.is_truthy(helper.wait_for(function() return count((starts(w, ids[P]))) >= 230 end, 20),
        w:describe())

      assert.is_true(helper.ok(s:pause(P)))
      local paused_at = helper.now()
      assert.is_false(s:pause(P)) -- already
      assert.same({ P }, (function()
        local out = {}
        for _, name in ipairs(helper.ok(s:paused())) do if name == P or name == Q then out[#out + 1] = name end end
        return out
      end)())
      -- jobs scheduled while paused wait too
      local late = schedule_all(s, { { P, { late = 1 } }, { P, { late = 2 } }, { P, { late = 3 } } })[P]
      for id in pairs(late) do ids[P][id] = true end
      -- the other name keeps running: all of it, while P waits
      assert.is_truthy(helper.wait_for(function() return count((starts(w, ids[Q]))) == 60 end, 15), w:describe())
      helper.sleep(paused_at + BOUND + 0.5 - helper.now())
      local per, latest = starts(w, ids[P])
      assert.is_true(latest <= paused_at + BOUND,
        ("a job of the paused name started %.3f s after pause() returned"):format(latest - paused_at))
      local before = count(per)
      assert.is_true(before < count(ids[P]) - 3, "the backlog had run out before the pause")
      for id in pairs(late) do assert.is_nil(per[id]) end
      -- a job running at the pause finished: every start has its end
      local done = {}
      for _, r in ipairs(w:events("done")) do done[r.id] = true end
      for id in pairs(per) do assert.is_true(done[id], "job " .. id .. " started and never finished") end
      local st
      for _, r in ipairs(helper.ok(s:stats())) do if r.name == P then st = r end end
      assert.is_true(st.paused)
      assert.equals(count(ids[P]) - before, st.due + st.later)

      -- resume: the rest starts at once (a wake-up, not the 15 s fallback)
      -- and every job runs exactly once
      assert.is_true(helper.ok(s:resume(P)))
      local resumed_at = helper.now()
      assert.is_truthy(helper.wait_for(function() return count((starts(w, ids[P]))) == count(ids[P]) end, 20),
        w:describe())
      local first = math.huge
      for _, r in ipairs(w:events("start")) do
        if ids[P][r.id] and r.time > resumed_at and r.time < first then first = r.time end
      end
      -- (measured: 0.01 s; without the wake-up it would be the 15 s fallback)
      assert.is_true(first - resumed_at < 3.0, ("first start %.3f s after resume()"):format(first - resumed_at))
      helper.sleep(0.2)
      for _, set in pairs(ids) do
        local n = starts(w, set)
        for id in pairs(set) do assert.equals(1, n[id], "job " .. id .. " started " .. tostring(n[id]) .. " times") end
      end
      assert.is_false(s:resume(P))
      quiet(w)
      assert.equals(0, helper.count_jobs(P))
      assert.equals(0, helper.count_jobs(Q))
    end)
  end

  it("concurrency 3: jobs claimed with a listener that blocks do not start once their name is paused", function()
    local s = helper.new()
    local P, Q = helper.name("taken"), helper.name("blocker")
    -- the first claim takes all three: Q blocks the worker's one Lua
    -- thread for 2.5 s (in C), and the two P jobs wait their turn,
    -- claimed and leased to it (the loop starts the coroutines of one
    -- claim last first: Q comes last)
    local ids = schedule_all(s, { { P, { n = 1 } }, { P, { n = 2 } }, { Q, { sleep = 2.5 } } })
    local w = helper.spawn { WORKER_NAMES = P .. "," .. Q, WORKER_CONCURRENCY = 3 }
    assert.is_truthy(helper.wait_for(function() return count((starts(w, ids[Q]))) == 1 end, 10), w:describe())
    helper.ok(s:pause(P))
    local paused_at = helper.now()
    local running = helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE state = 'running' AND name = %s")
      :format(helper.literal(P)))
    assert.equals(2, running, "the attack: both P jobs in the worker's hands when paused")
    local qid = next(ids[Q])
    assert.is_truthy(helper.wait_for(function() return #w:events("done", qid) == 1 end, 10), w:describe())
    helper.sleep(paused_at + 3.5 - helper.now())
    local per = starts(w, ids[P])
    assert.equals(0, count(per), "a job of the paused name started after pause() returned")
    helper.ok(s:resume(P))
    assert.is_truthy(helper.wait_for(function() return count((starts(w, ids[P]))) == 2 end, 3), w:describe())
    helper.sleep(0.2)
    per = starts(w, ids[P])
    for id in pairs(ids[P]) do assert.equals(1, per[id]) end
    quiet(w)
  end)

  it("outlives a worker's restart; an idle worker does not spin on due paused jobs", function()
    local s = helper.new()
    local P = helper.name("kept")
    helper.ok(s:pause(P))
    local ids = schedule_all(s, { { P, { n = 1 } }, { P, { n = 2 } }, { P, { n = 3 } } })[P]
    local w1 = helper.spawn { WORKER_NAMES = P, WORKER_LOG = "stderr" }
    assert.is_truthy(w1:wait_file("ready"), w1:describe())
    helper.sleep(0.3)
    local c0 = w1:cpu()
    helper.sleep(1.5)
    -- idle: it sleeps until a wake-up (a spin would be a second of CPU)
    assert.is_true(w1:cpu() - c0 < 0.5, ("the idle worker used %.2f s of CPU"):format(w1:cpu() - c0))
    assert.equals(0, #w1:events("start"))
    w1:kill("KILL")
    w1:wait(5)
    local w2 = helper.spawn { WORKER_NAMES = P, WORKER_LOG = "stderr", WORKER_CONCURRENCY = 2 }
    assert.is_truthy(w2:wait_file("ready"), w2:describe())
    helper.sleep(1.5)
    assert.equals(0, #w2:events("start"))
    local other = helper.new()
    helper.ok(other:resume(P))
    assert.is_truthy(helper.wait_for(function() return count((starts(w2, ids))) == 3 end, 3), w2:describe())
    helper.sleep(0.2)
    local per = starts(w2, ids)
    for id in pairs(ids) do assert.equals(1, per[id]) end
    quiet(w1)
    quiet(w2)
  end)

  it("resume wakes the workers only when it resumed a name #postgresql", function()
    local s = helper.new()
    local P = helper.name("notify")
    -- the wake-ups naming P a LISTEN session receives
    local function wakeups_during(fn) return (helper.wakeups_during(P, fn)) end
    assert.equals(0, wakeups_during(function() assert.is_false(s:resume(P)) end)) -- was not paused
    helper.ok(s:pause(P))
    assert.equals(1, wakeups_during(function() helper.ok(s:resume(P)) end))
  end)

  it("the commands pause, resume, stats and purge", function()
    local P, Q = helper.name("cli_paused"), helper.name("cli_idle")
    local function run(...)
      local r = cli.exec({ ... })
      return r
    end
    local s = helper.new()
    for i = 1, 3 do helper.schedule(s, P, i) end
    helper.schedule(s, P, 4, { delay = 600 })
    local f = helper.schedule(s, P, 5, { delay = 60 })
    helper.sql(("UPDATE scheduler.jobs SET state = 'failed', attempt = 2 WHERE id = %d"):format(f))
    local r = run("pause", P)
    assert.equals(0, r.code, cli.describe(r))
    assert.equals("paused " .. P .. "\n", r.out)
    r = run("pause", P, "--json")
    assert.same({ paused = false }, decode(r.out))
    r = run("pause", Q)
    assert.equals("paused " .. Q .. "\n", r.out)
    r = run("stats", "--json")
    assert.equals(0, r.code, cli.describe(r))
    local rows = {}
    for _, row in ipairs(decode(r.out)) do rows[row.name] = row end
    assert.is_true(rows[P].paused)
    assert.equals(3, rows[P].due)
    assert.is_true(rows[Q].paused) -- a paused name without jobs is listed
    assert.equals(0, rows[Q].due)
    r = run("stats")
    assert.is_truthy(r.out:find("PAUSED", 1, true), r.out)
    local line = r.out:match("[^\n]*" .. P:gsub("%p", "%%%0") .. "[^\n]*")
    assert.is_truthy(line and line:find("paused", #P + 1, true), r.out)

    r = run("purge", P, "--state", "scheduled")
    assert.equals(0, r.code, cli.describe(r))
    assert.equals("purged 4 waiting jobs\n", r.out)
    r = run("purge", P, "--json")
    assert.same({ purged = 1 }, decode(r.out)) -- the failed one
    assert.equals(0, helper.count_jobs(P))

    r = run("resume", P)
    assert.equals("resumed " .. P .. "\n", r.out)
    r = run("resume", P)
    assert.equals(P .. " was not paused\n", r.out)
    r = run("resume", Q, "--json")
    assert.same({ resumed = true }, decode(r.out))
    assert.is_nil(helper.ok(s:stats())[1] and (function()
      for _, row in ipairs(helper.ok(s:stats())) do if row.name == P or row.name == Q then return row end end
    end)())
    for _, bad in ipairs {
      { { "pause" }, "missing" },
      { { "pause", "" }, "NAME must not be empty" },
      { { "resume", "a", "b" }, "" },
    } do
      r = cli.exec(bad[1])
      assert.equals(2, r.code, cli.describe(r))
      assert.is_truthy(r.err:find(bad[2], 1, true), cli.describe(r))
    end
    helper.raises(function() s:pause("") end, "must not be empty")
    helper.raises(function() s:resume(1) end, "must be a string")
  end)
end)
