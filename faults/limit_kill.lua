--- Issue 16, item 2: a concurrency limit under kill -9.  The job name is
-- limited to 3 at once; two supervisors (`run --workers 2`, one job at a
-- time each, and `run --workers 1 --concurrency 4`) drain jobs of 50 ms
-- while a random worker of theirs is killed -9 every 2 s.  Counted from
-- the listener's own record (each run's start; it ends 50 ms later, or at
-- its worker's kill): never more than 3 runs at once, no job lost, and
-- every duplicate is a run in flight at a kill.  The killed worker's slots
-- come back at once (the supervisor releases its leases), so the drain
-- stays near the limit's ideal rate.
local lib = require "faults.lib"
local scheduler = require "scheduler"

local LIMIT, SLEEP = 3, 0.05

--- What limit_kill and limit_restart share: the name limited to LIMIT
-- (lifted at the end), the two supervisors (`label`-1: 2 workers at
-- concurrency 1; `label`-4: 1 at concurrency 4) recording into one
-- directory, and ctx.size(600) jobs of SLEEP seconds.  Returns the
-- records, both supervisors and the jobs' ids.
local function setup(ctx, r, label)
  lib.clear_jobs()
  local s <close> = scheduler.new { log = false }
  assert(s:limit(lib.JOB, { concurrency = LIMIT }))
  lib.on_cleanup(function()
    local c <close> = scheduler.new { log = false }
    c:limit(lib.JOB, nil)
  end)
  local records = lib.tmpdir(label .. "-records")
  local rec = lib.records(records)
  local one = lib.start_run(label .. "-1", 2, records)
  local many = lib.start_run(label .. "-4", 1, records, nil, { "--concurrency", "4" })
  r:check(one:wait_log("started: listeners", 2, 20), "the 2 workers at concurrency 1 started", one)
  r:check(many:wait_log("started: listeners", 1, 20), "the worker at concurrency 4 started", many)
  local list = {}
  for i = 1, ctx.size(600) do list[i] = { lib.JOB, { seq = i, sleep = SLEEP } } end
  return rec, one, many, assert(s:schedule_many(list))
end

return {
  LIMIT = LIMIT, SLEEP = SLEEP, setup = setup,
  title = "a name limited to 3 at once; kill -9 of a random worker every 2 s",
  recovery = "never more than 3 at once; the drain's rate against the limit's ideal",
  run = function(ctx, r)
    local rec, one, many, ids = setup(ctx, r, "limitkill")
    r.scheduled = #ids
    local t0 = lib.now()
    local killed = {}
    local k = 0
    while not rec:wait_all(ids, 0) and lib.now() - t0 < 90 do
      k = k + 1
      lib.sleep(math.max(0, t0 + 2 * k - lib.now()))
      local live = {}
      for _, p in ipairs(one:workers()) do live[#live + 1] = p end
      for _, p in ipairs(many:workers()) do live[#live + 1] = p end
      if #live == 3 and not rec:wait_all(ids, 0) then
        local pid = live[math.random(#live)]
        killed[pid] = lib.now()
        assert(require("scheduler.core").process.kill(pid, "KILL"))
      end
    end
    r:check(rec:wait_all(ids, 60), "every job ran", one)
    rec:read()
    local most, t1 = lib.most_at_once(rec.runs, SLEEP, function(run) return killed[run.pid] end)
    local kills = 0
    for _ in pairs(killed) do kills = kills + 1 end
    local ideal = #ids * SLEEP / LIMIT
    r:note(("%d kills; at most %d runs at once (limit %d); drained in %.2f s, ideal %.2f s (%.0f%%)"):format(
      kills, most, LIMIT, t1 - t0, ideal, ideal / (t1 - t0) * 100))
    r:check(most <= LIMIT, ("never more than %d at once (%d)"):format(LIMIT, most))
    r:check(kills >= 2, ("workers killed (%d)"):format(kills))
    r:check(one:stop() == 0, "the supervisor at concurrency 1 stopped gracefully", one)
    r:check(many:stop() == 0, "the supervisor at concurrency 4 stopped gracefully", many)
    rec:read()
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, lib.in_flight_at_kill(killed))
  end,
}
