--- Scenario 2, worker crashes: kill -9 a random worker of `lua-scheduler
-- run --workers 4` every 2 s while 20,000 jobs (due over 20 s, 2 ms each)
-- run, then three times during a burst of 100,000 no-op jobs due at once.  No job may be lost; a job may run twice only if its first run was
-- by a worker killed while that run was in flight.  Then, on a quiet
-- system, how fast a killed worker's job runs again: with the supervisor
-- (it releases the jobs of a dead worker at once), and with standalone
-- workers and no supervisor (after the lease, 2 s here).
local lib = require "faults.lib"
local core = require "scheduler.core"
local scheduler = require "scheduler"

local HOST = core.default_worker_id():match("^(.*):%d+:%w+$")

--- Ids of the jobs worker `pid` holds leased (state running), from the
-- database.  (Those of a batch still held by row locks read as scheduled,
-- or as running without a lease once their listener has run 10 ms.)
local function held_by(s, pid)
  local jobs = assert(s:jobs { state = "running", name = lib.JOB })
  local ids = {}
  for _, j in ipairs(jobs) do
    -- "host:pid:suffix" (the supervisor picked the suffix)
    if j.locked_until and (j.locked_by or ""):match("^(.*):%w+$") == HOST .. ":" .. pid then
      ids[#ids + 1] = j.id
    end
  end
  return ids
end

--- Kill -9 `pid` now; returns { pid, t, held }.
local function kill(s, pid)
  local held = held_by(s, pid)
  local t = lib.now()
  assert(core.process.kill(pid, "KILL"))
  return { pid = pid, t = t, held = held }
end

--- For each kill, for each job the killed worker had started (by the
-- records) and that ran again after the kill: seconds from the kill to that
-- run.  Covers the jobs of a batch held by row locks (released by the
-- database when the worker's connection died) and leased ones (released by
-- the supervisor).
local function rerun_delays(rec, kills)
  local delays = {}
  for _, k in ipairs(kills) do
    for _, runs in pairs(rec.by_id) do
      local mine, after = false, nil
      for _, run in ipairs(runs) do
        if run.pid == k.pid and run.start < k.t then mine = true end
        if run.start > k.t and (not after or run.start < after) then after = run.start end
      end
      if mine and after then delays[#delays + 1] = after - k.t end
    end
  end
  return delays
end

--- Wait until job `id` is leased (its batch settled, after lease/4 at most
-- 1 s), so that a kill tests the lease path.
local function wait_leased(s, id)
  return lib.wait_for(function() return lib.leased(s, id) end, 5, 0.01)
end

local function max_of(list)
  local m = 0
  for _, v in ipairs(list) do m = math.max(m, v) end
  return m
end

return {
  title = "worker crashes: kill -9 a random worker every 2 s, 20,000 jobs",
  recovery = "kill -9 of a worker -> the jobs it held start again (under load: max; idle: with the supervisor; without it: after the lease)",
  run = function(ctx, r)
    local n, spread, workers = ctx.size(20000), 20, 4
    lib.clear_jobs()
    local admin <close> = scheduler.new { database = ctx.database, log = false }
    local records = lib.tmpdir("kill-records")
    local rec = lib.records(records)
    local sup = lib.start_run("kill", workers, records)
    r:check(sup:wait_log("started: listeners", workers, 20), "the 4 workers started", sup)

    -- A: kills under load
    local s <close> = scheduler.new { log = false }
    local ids, t0 = lib.schedule_spread(s, n, spread, 0.002)
    r.scheduled = #ids
    local kills, killed = {}, {}
    for k = 1, spread // 2 do
      lib.sleep(math.max(0, t0 + 2 * k - lib.now()))
      local live = sup:workers()
      if #live > 0 then
        local k = kill(admin, live[math.random(#live)])
        kills[#kills + 1] = k
        killed[k.pid] = k.t
      end
    end
    lib.log("worker_kill: %d kills; waiting for the jobs", #kills)
    rec:wait_all(ids, 90)
    rec:read()
    local held = 0
    for _, k in ipairs(kills) do held = held + #k.held end
    r:check(#kills >= spread // 2 - 1, ("%d workers killed with kill -9 (%d jobs held at the kill)"):format(
      #kills, held))
    local delays = rerun_delays(rec, kills)
    if #delays > 0 then
      r:recovered("under load: kill -9 -> its jobs re-run (max)", max_of(delays), "load")
    end
    if held > 0 then
      r:check(sup:count_log("released ") > 0, "the supervisor released the leased jobs of dead workers", sup)
    end
    local late = {}
    for _, run in ipairs(rec.runs) do
      late[#late + 1] = run.start - run.run_at
      if run.start - run.run_at > 5 then
        -- a job that waited for a lease: say which kill it followed
        local near = ""
        for _, k in ipairs(kills) do
          if k.t < run.start and k.t > run.run_at - 5 then
            near = near .. (" kill of %d at %+.3f s;"):format(k.pid, k.t - run.run_at)
          end
        end
        local runs = {}
        for _, x in ipairs(rec.by_id[run.id]) do
          runs[#runs + 1] = ("attempt %d by %d at %+.3f s"):format(x.attempt, x.pid, x.start - x.run_at)
        end
        r:note(("job %d ran %.1f s late (%s);%s"):format(run.id, run.start - run.run_at, table.concat(runs, ", "), near))
      end
    end
    r.lateness = lib.spread(late)
    r:check(r.lateness.max < 10000, ("no job waited for a dead worker's lease (30 s): max lateness %.0f ms")
      :format(r.lateness.max))

    -- A2: kills during a burst of no-op jobs due at once: every batch is
    -- full, so on PostgreSQL each worker holds several batches in one
    -- transaction, and the next one claimed ahead
    local burst_n = ctx.size(100000)
    local list = {}
    for i = 1, burst_n do list[i] = { lib.JOB, { seq = n + i } } end
    local burst = assert(s:schedule_many(list)) -- one transaction: due all at once
    local burst_kills = 0
    for _ = 1, 3 do
      lib.sleep(0.05)
      local live = sup:workers()
      if #live > 0 then
        local k = kill(admin, live[math.random(#live)])
        killed[k.pid] = k.t
        burst_kills = burst_kills + 1
      end
    end
    rec:wait_all(burst, 90)
    rec:read()
    local rerun = 0
    for _, id in ipairs(burst) do
      if #(rec.by_id[id] or {}) > 1 then rerun = rerun + 1 end
    end
    r:check(burst_kills == 3, ("3 workers killed during a burst of %d jobs (%d of them ran again)")
      :format(burst_n, rerun))
    table.move(burst, 1, #burst, #ids + 1, ids)

    -- B: quiet system, supervisor: the job a killed worker held runs again
    -- at once (another worker is idle)
    local slow = assert(s:schedule(lib.JOB, { seq = -2, sleep = 3 }))
    local first = lib.wait_for(function() rec:read(); return (rec.by_id[slow] or {})[1] end, 10, 0.01)
    r:check(first, "the slow job started", sup)
    r:check(wait_leased(admin, slow), "the slow job is leased (its batch settled)", sup)
    if first then
      local others = {}
      for _, pid in ipairs(sup:workers()) do
        if pid ~= first.pid then others[pid] = true end
      end
      local k = kill(admin, first.pid)
      killed[k.pid] = k.t
      local again = rec:run_after(slow, k.t, 40)
      r:check(again, "the killed worker's job ran again (supervisor)", sup)
      if again then
        r:recovered("idle, supervisor: kill -9 -> its job re-run", again.start - k.t, "idle")
        r:check(again.start - k.t < 2, "it ran again within 2 s of the kill, not after its lease")
        if next(others) then
          r:check(others[again.pid], "an idle worker took it (woken when the supervisor released it)")
        end
      end
    end
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)

    -- C: standalone workers, no supervisor: after the lease
    local lease = 2
    local env = { FAULTS_RECORDS = records }
    local a = lib.start("standalone-a", { lib.LUA, lib.ROOT .. "/faults/worker.lua", tostring(lease) }, env)
    local b = lib.start("standalone-b", { lib.LUA, lib.ROOT .. "/faults/worker.lua", tostring(lease) }, env)
    lib.sleep(0.5) -- both listening
    local job = assert(s:schedule(lib.JOB, { seq = -3, sleep = 1 }))
    local run1 = lib.wait_for(function() rec:read(); return (rec.by_id[job] or {})[1] end, 10, 0.01)
    r:check(run1, "the standalone job started", a)
    r:check(wait_leased(admin, job), "the standalone job is leased (its batch settled)", a)
    if run1 then
      local k = kill(admin, run1.pid)
      killed[k.pid] = k.t
      local again = rec:run_after(job, k.t, 20)
      r:check(again, "the killed standalone worker's job ran again", run1.pid == a.pid and b or a)
      if again then
        local d = again.start - k.t
        r:recovered(("standalone workers, lease %g s: kill -9 -> its job re-run"):format(lease), d,
          ("no supervisor, lease %g s"):format(lease))
        r:check(d <= lease + 1, ("it ran again within the lease (+1 s): %.2f s"):format(d))
      end
    end
    a:stop(10)
    b:stop(10)
    -- the jobs of phases B and C are part of the count
    ids[#ids + 1] = slow
    ids[#ids + 1] = job
    rec:read()
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, lib.in_flight_at_kill(killed))
  end,
}
