-- Scenario stale_write (issue 14, item 3): a stale write never touches a
-- newer claim.  Worker A (standalone, lease 2 s) runs a job that blocks in
-- C for 3.5 s, past its 0.3 s time limit: A stops renewing its lease, which
-- expires after about 3.3 s, and worker B claims the job again (a new
-- token) and runs it for 2 s.  Meanwhile A's listener returns and A writes
-- its outcome, fenced on its old claim: the job must still be B's,
-- running, and B's own outcome ends it.  Counted by the independent record; the job's row is read at
-- each step.
local lib = require "faults.lib"
local scheduler = require "scheduler"

local function worker(label, records)
  return lib.start(label, { lib.LUA, lib.ROOT .. "/faults/worker.lua", "2" }, { FAULTS_RECORDS = records })
end

return {
  title = "stale write: a worker whose lease expired writes after another claimed the job again",
  recovery = "lease expiry -> the second claim; the stale write left it alone",
  run = function(ctx, r)
    local records = lib.tmpdir("stale-records")
    local rec = lib.records(records)
    local s <close> = scheduler.new { log = false }
    lib.psql("DELETE FROM scheduler.jobs WHERE name = 'fault_stale'")
    local a = worker("stale-a", records)
    lib.sleep(0.5)
    local id = assert(s:schedule("fault_stale", { seq = 1, sleep = 3.5, again = 2 }))
    r.scheduled = 1
    local first = lib.wait_for(function() rec:read(); return (rec.by_id[id] or {})[1] end, 10, 0.01)
    r:check(first and first.pid == a.pid, "worker A started the job", a)
    local b = worker("stale-b", records)
    local second = lib.wait_for(function()
      rec:read()
      for _, run in ipairs(rec.by_id[id] or {}) do
        if run.pid == b.pid then return run end
      end
    end, 15, 0.02)
    r:check(second, "worker B claimed it again once A's lease expired", b)
    if not (first and second) then return end
    r:recovered("A's start -> B's start (time limit 0.3 s + 1 s, lease 2 s)", second.start - first.start, "re-claimed")
    local function row()
      for _, j in ipairs(assert(s:jobs { name = "fault_stale" })) do
        if j.id == id then return j end
      end
    end
    local during = row()
    -- A's listener returns 3.5 s after it started, and A writes its outcome
    local stale = lib.wait_for(function() return a:count_log("blocked outside Lua") > 0
      and lib.now() > first.start + 3.5 + 0.3 end, 10, 0.05)
    local after = row()
    r:check(stale and lib.now() < second.start + 2, "A's listener returned while B's run went on")
    -- B holds it in its claim transaction (the row reads as before B's
    -- claim) or, after a second, leased: either way A's write may change
    -- nothing of it
    r:check(during ~= nil, "the job is there while B runs it")
    local b_holds = after and ((after.state == "scheduled" and after.attempt == during.attempt)
      or (after.state == "running" and tostring(after.locked_by):find(":" .. b.pid, 1, true)))
    r:check(b_holds, ("A's late outcome left B's claim alone (%s, attempt %s, %s)"):format(
      after and after.state or "gone", after and after.attempt or "-", after and after.locked_by or "-"))
    r:check(lib.wait_for(function() return s:job(id) == nil end, 10, 0.05), "B's own outcome ended the job", b)
    a:stop(10)
    b:stop(10)
    rec:read()
    local lost, dups = rec:check({ id })
    r:count({ id }, rec, lost, dups, function(runs)
      return #runs == 2 and runs[1].pid == a.pid and runs[2].pid == b.pid and "its lease expired in A" or nil
    end)
  end,
}
