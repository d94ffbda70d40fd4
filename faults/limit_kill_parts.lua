--- Issue 16, item 2 with partitions: limit_kill (see there) with the name
-- limited to 2 at once per tenant (`by = "tenant"`, 8 tenants, the job
-- with seq i in tenant i % 8, a ninth of them without a tenant: partition
-- ""), under the same kill -9 of a random worker every 2 s.  Counted per
-- partition from the listener's own record: never more than 2 runs of one
-- partition at once, no job lost, every duplicate a run in flight at a
-- kill.
local lib = require "faults.lib"
local scheduler = require "scheduler"

local KILL_LAG = 0.01
local LIMIT, SLEEP, TENANTS = 2, 0.05, 8

-- the partition of the job with seq i (its payload's tenant, "" without)
local function part(i)
  if i % 9 == 0 then return "" end
  return "t" .. i % TENANTS
end

return {
  title = "a name limited to 2 at once per tenant (9 partitions); kill -9 of a random worker every 2 s",
  recovery = "never more than 2 at once in a partition; the drain's rate against the ideal",
  run = function(ctx, r)
    local n = ctx.size(600)
    lib.clear_jobs()
    local s <close> = scheduler.new { log = false }
    assert(s:limit(lib.JOB, { concurrency = LIMIT, by = "tenant" }))
    lib.on_cleanup(function()
      local c <close> = scheduler.new { log = false }
      c:limit(lib.JOB, nil)
    end)
    local records = lib.tmpdir("limitparts-records")
    local rec = lib.records(records)
    local one = lib.start_run("limitparts-1", 2, records)
    local many = lib.start_run("limitparts-4", 1, records, nil, { "--concurrency", "4" })
    r:check(one:wait_log("started: listeners", 2, 20), "the 2 workers at concurrency 1 started", one)
    r:check(many:wait_log("started: listeners", 1, 20), "the worker at concurrency 4 started", many)
    local list = {}
    for i = 1, n do
      local p = part(i)
      list[i] = { lib.JOB, { seq = i, sleep = SLEEP, tenant = p ~= "" and p or nil } }
    end
    local ids = assert(s:schedule_many(list))
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
    local t1 = -math.huge
    local points = {} -- per partition
    for _, run in ipairs(rec.runs) do
      local stop = run.start + SLEEP
      local kill = killed[run.pid]
      if kill and kill > run.start and kill < stop then stop = kill end
      local p = part(run.seq)
      points[p] = points[p] or {}
      points[p][#points[p] + 1] = { run.start, 1 }
      points[p][#points[p] + 1] = { stop, -1 }
      t1 = math.max(t1, stop)
    end
    local most, used = 0, 0
    for _, pts in pairs(points) do
      table.sort(pts, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
      end)
      local now = 0
      for _, pt in ipairs(pts) do
        now = now + pt[2]
        most = math.max(most, now)
      end
      used = used + 1
    end
    local kills = 0
    for _ in pairs(killed) do kills = kills + 1 end
    -- 6 slots (2 workers of 1, one of 4) below 9 partitions of 2
    local ideal = n * SLEEP / 6
    r:note(("%d kills; at most %d runs at once in one of %d partitions (limit %d each); drained in %.2f s,"
      .. " ideal %.2f s (%.0f%%)"):format(kills, most, used, LIMIT, t1 - t0, ideal, ideal / (t1 - t0) * 100))
    r:check(most <= LIMIT, ("never more than %d at once in a partition (%d)"):format(LIMIT, most))
    r:check(kills >= 2, ("workers killed (%d)"):format(kills))
    r:check(one:stop() == 0, "the supervisor at concurrency 1 stopped gracefully", one)
    r:check(many:stop() == 0, "the supervisor at concurrency 4 stopped gracefully", many)
    rec:read()
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function(runs)
      for i = 1, #runs - 1 do
        local t = killed[runs[i].pid]
        if not (t and runs[i].start < t + KILL_LAG and runs[i + 1].start > t) then return nil end
      end
      return "in flight at a kill"
    end)
  end,
}
