--- Issue 14, item 8: the loop cannot leave debris.  A worker whose run()
-- meets memory errors in the loop's own C code (faults/escape_worker.lua:
-- a "fault_arm" job makes every new table fail, so run() cannot build the
-- next job's arguments), 10 times, next to a normal worker, while 3,000
-- jobs come due over 6 s.  After each error run() must have stopped its
-- heartbeat thread, restored the signal handlers and ended its claim
-- transaction, and must run again; no job may be lost, run twice or be
-- charged an attempt (the job run() could not start goes back
-- unattempted, at once, to either worker).
local lib = require "faults.lib"
local scheduler = require "scheduler"

local TRAP = "fault_arm"

return {
  title = "escaped error: 10 memory errors in run()'s own C code, next to a normal worker",
  recovery = "the error -> the same worker runs jobs again (max over the errors)",
  run = function(ctx, r)
    local n, spread, traps = ctx.size(3000), 6, 10
    lib.clear_jobs()
    lib.psql(("DELETE FROM scheduler.jobs WHERE name = '%s'"):format(TRAP))
    local records = lib.tmpdir("escape-records")
    local rec = lib.records(records)
    local out = lib.tmpdir("escape-out") .. "/returns"
    local env = { FAULTS_RECORDS = records }
    local a = lib.start("escape-worker", { lib.LUA, lib.ROOT .. "/faults/escape_worker.lua", out }, env)
    local b = lib.start("normal-worker", { lib.LUA, lib.ROOT .. "/faults/worker.lua", "30" }, env)
    lib.sleep(0.5) -- both listening

    local s <close> = scheduler.new { log = false }
    local ids, t0 = lib.schedule_spread(s, n, spread, 0.001)
    for k = 1, traps do
      ids[#ids + 1] = assert(s:schedule(TRAP, { seq = -k }, t0 + 1 + k * spread / (traps + 1)))
    end
    r.scheduled = #ids
    r:check(rec:wait_all(ids, spread + 30), "every job ran", a)
    rec:read()

    -- what run() returned, and what it left behind
    local returns = {}
    for line in (lib.read_file(out) or ""):gmatch("[^\n]+") do
      local t, v, threads, sigs, msg = line:match("^(%S+) (%S+) (%d+) (%S+) (.*)$")
      if t then
        returns[#returns + 1] = { t = tonumber(t), v = v, threads = tonumber(threads), sigs = sigs, msg = msg }
      end
    end
    local clean, oom = 0, 0
    for _, x in ipairs(returns) do
      if x.v == "nil" and x.msg == "scheduler: run: not enough memory" then oom = oom + 1 end
      if x.threads == 1 and x.sigs == "same" then clean = clean + 1 end
    end
    r:check(oom == traps, ("run() returned nil, \"not enough memory\" %d times (%d traps)"):format(oom, traps), a)
    r:check(clean == #returns, ("after each: heartbeat thread stopped, signal handlers restored (%d of %d)")
      :format(clean, #returns), a)
    r:check(a:alive(), "the worker is alive and runs again after each error", a)
    -- usable again: it ran jobs after each error
    local worst = 0
    for _, x in ipairs(returns) do
      local next_run = math.huge
      for _, run in ipairs(rec.runs) do
        if run.pid == a.pid and run.start > x.t then next_run = math.min(next_run, run.start) end
      end
      if next_run < math.huge then worst = math.max(worst, next_run - x.t) end
    end
    r:recovered("memory error -> the same worker runs jobs again (max)", worst, "runs again")
    local by_a, by_b, charged = 0, 0, 0
    for _, run in ipairs(rec.runs) do
      if run.pid == a.pid then by_a = by_a + 1 elseif run.pid == b.pid then by_b = by_b + 1 end
      if run.attempt ~= 1 then charged = charged + 1 end
    end
    r:note(("runs: %d by the worker with the errors, %d by the other"):format(by_a, by_b))
    r:check(charged == 0, ("no job charged an attempt (%d runs at attempt > 1)"):format(charged))
    r:check(a:stop(10) == 0, "it stops gracefully on SIGTERM (exit 0)", a)
    b:stop(10)
    local late = {}
    for _, run in ipairs(rec.runs) do late[#late + 1] = run.start - run.run_at end
    r.lateness = lib.spread(late)
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end) -- no kill: any duplicate is unexplained
  end,
}
