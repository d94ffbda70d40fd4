--- Scenario 1, load: 4 worker processes (`lua-scheduler run --workers 4`),
-- 50,000 jobs due at random times over 20 s.  Each must run exactly once;
-- lateness (start minus run_at, one host clock) is recorded.
local lib = require "faults.lib"
local scheduler = require "scheduler"

return {
  title = "load: 4 workers, 50,000 jobs due over 20 s",
  run = function(ctx, r)
    local n, spread, workers = ctx.size(50000), 20, 4
    lib.clear_jobs()
    local records = lib.tmpdir("load-records")
    local sup = lib.start_run("load", workers, records)
    r:check(sup:wait_log("started: listeners", workers, 20), "the 4 workers started", sup)

    -- schedule everything up front, in lists of 1,000, due 1-21 s from now
    local s <close> = scheduler.new { log = false }
    local ids, t0 = lib.schedule_spread(s, n, spread)
    r.scheduled = #ids
    lib.log("load: %d jobs scheduled in %.2f s; waiting for them", #ids, lib.now() - t0)

    local rec = lib.records(records)
    rec:wait_all(ids, spread + 40)
    r:check(sup:count_log("was killed") + sup:count_log("exited with") == 0, "no worker died", sup)
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    rec:read()
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end) -- no kills: any duplicate is unexplained
    local late = {}
    for _, run in ipairs(rec.runs) do late[#late + 1] = run.start - run.run_at end
    r.lateness = lib.spread(late)
    local pids = {}
    for _, run in ipairs(rec.runs) do pids[run.pid] = (pids[run.pid] or 0) + 1 end
    local shares = {}
    for pid, c in pairs(pids) do shares[#shares + 1] = ("%d: %d"):format(pid, c) end
    table.sort(shares)
    r:note("runs per worker pid: " .. table.concat(shares, ", "))
    r:check(#shares == workers, "all 4 workers ran jobs")
  end,
}
