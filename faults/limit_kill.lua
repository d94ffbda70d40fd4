--- Issue 16, item 2: a concurrency limit under kill -9.  The job name is
-- limited to 3 at once; two supervisors (`run --workers 2`, one job at a
-- time each, and `run --workers 1 --concurrency 4`) drain jobs of 50 ms
-- while a random worker of theirs is killed -9 every 2 s.  Counted from
-- the listener's own record (each run's start; it ends 50 ms later, or at
-- its worker's kill): never more than 3 runs at once, no job lost, and
-- every duplicate is a run in flight at a kill.  The killed worker's slots
-- come back at once (the supervisor releases its leases), so the drain
-- stays near the limit's ideal rate.
--
-- The same attack with partitions is limit_kill_parts (kill_scenario
-- below, with `by`); limit_restart and limit_restart_parts share the
-- set-up (setup) and the count per partition (most_at_once).
local lib = require "faults.lib"
local scheduler = require "scheduler"

local M = { LIMIT = 3, SLEEP = 0.05 }

-- the two supervisors' workers: 2 at concurrency 1 and 1 at concurrency 4
M.SLOTS = 6

--- The set-up the limit scenarios share: the name limited (o.limit at
-- once, per o.by's partitions if set; o.limits: those limits instead;
-- lifted at the end), the two
-- supervisors (`label`-1: 2 workers at concurrency 1; `label`-4: 1 at
-- concurrency 4) recording into one directory, and ctx.size(o.jobs or
-- 600) jobs of M.SLEEP seconds, the i-th with o.payload(i)'s fields if
-- set.  Returns the records, both supervisors and the jobs' ids.
function M.setup(ctx, r, label, o)
  o = o or {}
  lib.clear_jobs()
  local s <close> = scheduler.new { log = false }
  assert(s:limit(lib.JOB, o.limits or { concurrency = o.limit or M.LIMIT, by = o.by }))
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
  for i = 1, ctx.size(o.jobs or 600) do
    local p = { seq = i, sleep = M.SLEEP }
    for k, v in pairs(o.payload and o.payload(i) or {}) do p[k] = v end
    list[i] = { lib.JOB, p }
  end
  return rec, one, many, assert(s:schedule_many(list))
end

--- The most of `runs` in progress at once in any one partition (the run
-- with seq i in partition part(i); without `part`, the whole name), each
-- M.SLEEP long or cut at cut(run) (lib.most_at_once); also the latest end
-- and the number of partitions that ran.
function M.most_at_once(runs, part, cut)
  local by = {}
  for _, run in ipairs(runs) do
    local p = part and part(run.seq) or ""
    by[p] = by[p] or {}
    by[p][#by[p] + 1] = run
  end
  local most, last, parts = 0, -math.huge, 0
  for _, list in pairs(by) do
    local m, t = lib.most_at_once(list, M.SLEEP, cut)
    most, last, parts = math.max(most, m), math.max(last, t), parts + 1
  end
  return most, last, parts
end

--- Kill -9 a random worker of the two supervisors every 2 s from t0,
-- while jobs `ids` are not all done (rec), for `seconds` at most and at
-- most `most` kills (nil: no bound); only while all 3 workers are up (a
-- supervisor replaces a killed one at once).  Returns each killed pid's
-- time of kill.
function M.kill_every_2s(rec, ids, one, many, t0, seconds, most)
  local killed, k = {}, 0
  while not rec:wait_all(ids, 0) and lib.now() - t0 < seconds and k < (most or math.huge) do
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
  return killed
end

--- The kill scenario: o.limit at once (per partition with o.by, the run
-- with seq i in partition o.part(i)); o.title, o.label.
function M.kill_scenario(o)
  return {
    title = o.title,
    recovery = o.by and "never more than " .. o.limit .. " at once in a partition; the drain's rate against the ideal"
      or "never more than " .. o.limit .. " at once; the drain's rate against the limit's ideal",
    run = function(ctx, r)
      local rec, one, many, ids = M.setup(ctx, r, o.label, o)
      r.scheduled = #ids
      local t0 = lib.now()
      local killed = M.kill_every_2s(rec, ids, one, many, t0, 90)
      r:check(rec:wait_all(ids, 60), "every job ran", one)
      rec:read()
      -- the most at once in any one partition (the whole name: one)
      local most, t1, parts = M.most_at_once(rec.runs, o.part, function(run) return killed[run.pid] end)
      local kills = 0
      for _ in pairs(killed) do kills = kills + 1 end
      local ideal = #ids * M.SLEEP / math.min(M.SLOTS, o.limit * parts)
      r:note(("%d kills; at most %d runs at once%s (limit %d); drained in %.2f s, ideal %.2f s (%.0f%%)"):format(
        kills, most, o.by and (" in one of %d partitions"):format(parts) or "", o.limit, t1 - t0, ideal,
        ideal / (t1 - t0) * 100))
      r:check(most <= o.limit, ("never more than %d at once%s (%d)"):format(o.limit,
        o.by and " in a partition" or "", most))
      r:check(kills >= 2, ("workers killed (%d)"):format(kills))
      r:check(one:stop() == 0, "the supervisor at concurrency 1 stopped gracefully", one)
      r:check(many:stop() == 0, "the supervisor at concurrency 4 stopped gracefully", many)
      rec:read()
      local lost, dups = rec:check(ids)
      r:count(ids, rec, lost, dups, lib.in_flight_at_kill(killed))
    end,
  }
end

-- the scenario, which also carries what limit_kill_parts, limit_restart
-- and limit_restart_parts take from here
return setmetatable(M.kill_scenario {
  title = "a name limited to 3 at once; kill -9 of a random worker every 2 s",
  label = "limitkill", limit = M.LIMIT,
}, { __index = M })
