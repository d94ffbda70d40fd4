--- Issue 14, item 7: an expired lease comes back within a second of its
-- expiry although the only other worker is busy with a backlog.  Two
-- standalone workers (faults/worker.lua, lease 3 s, no supervisor to
-- release anything): one takes a slow job, holds it leased and is killed
-- with kill -9; at once 10 s of due jobs arrive, which the other one works
-- through.  Before, only a worker with nothing due looked for expired
-- leases: the job waited for the end of the backlog (10.3 s).
local lib = require "faults.lib"
local scheduler = require "scheduler"

local LEASE = 3

return {
  title = "a dead worker's lease (3 s, no supervisor) expires while the other worker has a 10 s backlog",
  recovery = "its lease expired -> the dead worker's job starts again, while the other works through the backlog",
  run = function(ctx, r)
    local n, each = ctx.size(5000), 0.002 -- 10 s of work
    lib.clear_jobs()
    local records = lib.tmpdir("backlog-records")
    local rec = lib.records(records)
    local env = { FAULTS_RECORDS = records }
    local workers = {
      lib.start("backlog-a", { lib.LUA, lib.ROOT .. "/faults/worker.lua", tostring(LEASE) }, env),
      lib.start("backlog-b", { lib.LUA, lib.ROOT .. "/faults/worker.lua", tostring(LEASE) }, env),
    }
    lib.sleep(0.5) -- both listening
    local s <close> = scheduler.new { log = false }
    local slow = assert(s:schedule(lib.JOB, { seq = -1, sleep_first = 60 }))
    local first = lib.wait_for(function() rec:read(); return (rec.by_id[slow] or {})[1] end, 10, 0.01)
    r:check(first, "the slow job started", workers[1])
    if not first then return end
    -- leased once its batch is settled (after lease/4)
    r:check(lib.wait_for(function() return lib.leased(s, slow) end, 5, 0.01),
      "the slow job is leased")
    local holder, other = workers[1], workers[2]
    if first.pid ~= holder.pid then holder, other = other, holder end

    local t_kill = lib.now()
    assert(holder:kill("KILL"))
    -- the backlog, due now, for the one worker left
    local ids, list = {}, {}
    for i = 1, n do
      list[#list + 1] = { lib.JOB, { seq = i, sleep = each } }
      if #list == 1000 or i == n then
        local got = assert(s:schedule_many(list))
        table.move(got, 1, #got, #ids + 1, ids)
        list = {}
      end
    end
    -- the dead worker renews no more: this is when its lease ends
    local expiry = assert(s:jobs { id = slow })[1].locked_until
    lib.log("lease_backlog: killed %d; its lease ends %.2f s after the kill; %d jobs due",
      holder.pid, expiry - t_kill, #ids)

    local again = lib.wait_for(function()
      rec:read()
      for _, run in ipairs(rec.by_id[slow] or {}) do
        if run.start > t_kill then return run end
      end
    end, 30, 0.01)
    r:check(again, "the dead worker's job ran again", other)
    rec:wait_all(ids, 60)
    rec:read()
    local last = 0
    for _, id in ipairs(ids) do
      for _, run in ipairs(rec.by_id[id] or {}) do last = math.max(last, run.start) end
    end
    if again then
      local d = again.start - expiry
      r:recovered("lease expired -> the job starts again (other worker busy)", d, "expiry +")
      r:check(d >= 0, ("not before its lease expired (%.3f s)"):format(d))
      r:check(d <= 1.5, ("within a second of its expiry (+ a batch and scheduling): %.3f s"):format(d))
      r:check(again.pid == other.pid, "by the other worker")
      r:check(last > again.start + 1, ("while the backlog ran (it ended %.1f s later)"):format(last - again.start))
      r:note(("the backlog: %d jobs, %.1f s of work, done %.1f s after the kill"):format(#ids, #ids * each,
        last - t_kill))
    end
    for _, w in ipairs(workers) do w:stop(10) end
    ids[#ids + 1] = slow
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function(runs)
      -- the slow job: its first run was in the killed worker
      if #runs == 2 and runs[1].pid == holder.pid and runs[1].start < t_kill then
        return "in flight at the kill"
      end
    end)
  end,
}
