--- Issue 16, item 2: a concurrency limit across database restarts.  The
-- job name is limited to 3 at once; two supervisors (`run --workers 2`,
-- one job at a time each, and `run --workers 1 --concurrency 4`) drain
-- jobs of 50 ms while PostgreSQL is restarted in immediate mode (a crash:
-- sessions cut, claims in flight lost with their transactions), then in
-- fast mode.  Counted from the listener's own record (each run's start;
-- it ends 50 ms later): never more than 3 runs at once, before, across and
-- after the restarts (the running leases the limit counts are committed
-- rows: they survive the crash, and the outcomes the outage kept from
-- being written are written once the workers are back); no job lost;
-- every duplicate is a run whose outcome a restart cut off; the workers
-- come back by themselves and fill the slots again.
--
-- The same restarts with partitions are limit_restart_parts
-- (restart_scenario below, with limit_kill_parts' partitions).
local lib = require "faults.lib"
local limit_kill = require "faults.limit_kill"

local SLEEP = limit_kill.SLEEP

--- The restart scenario: o.limit at once (per partition with o.by, the
-- run with seq i in partition o.part(i)), o.jobs jobs (setup's default
-- without), the restarts at o.restarts' times; o.title, o.label (of its
-- processes), o.name (of its log lines).
local function restart_scenario(o)
  local where = o.by and " in a partition" or ""
  return {
    title = o.title,
    recovery = ("never more than %d at once%s; server ready -> the limited name runs again"):format(o.limit,
      where),
    run = function(ctx, r)
      local restarts = {}
      for i, x in ipairs(o.restarts) do restarts[i] = { at = x.at, mode = x.mode } end
      local rec, one, many, ids = limit_kill.setup(ctx, r, o.label, o)
      local before = table.concat(one:workers(), ",") .. "/" .. table.concat(many:workers(), ",")
      r.scheduled = #ids
      local t0 = lib.now()
      lib.restart_at(ctx, restarts, t0, o.name)
      r:check(rec:wait_all(ids, 90), "every job ran", one)
      lib.sleep(1) -- would anything run twice?
      rec:read()
      local most, t1, parts = limit_kill.most_at_once(rec.runs, o.part)
      local down = 0
      for _, x in ipairs(restarts) do down = down + (x.t_end - x.t_begin) end
      local ideal = #ids * SLEEP / math.min(limit_kill.SLOTS, o.limit * parts)
      r:note(("at most %d runs at once%s (limit %d%s); drained in %.2f s, of which the server was down"
        .. " %.2f s; ideal %.2f s"):format(most, where, o.limit,
        o.by and (", %d partitions"):format(parts) or "", t1 - t0, down, ideal))
      r:check(most <= o.limit, ("never more than %d at once%s (%d)"):format(o.limit, where, most))
      for _, x in ipairs(restarts) do
        local first = math.huge
        for _, run in ipairs(rec.runs) do
          if run.start > x.t_end then first = math.min(first, run.start) end
        end
        -- the slots filled again: o.limit runs at once (in one partition)
        -- within 5 s of the server's return
        local again = {}
        for _, run in ipairs(rec.runs) do
          if run.start > x.t_end and run.start < x.t_end + 5 then again[#again + 1] = run end
        end
        local busy = limit_kill.most_at_once(again, o.part)
        r:recovered(x.mode .. ": server down", x.t_end - x.t_begin)
        if first < math.huge then r:recovered(x.mode .. ": ready -> first job", first - x.t_end, x.mode) end
        r:check(first < math.huge, x.mode .. " restart: the limited name ran again")
        r:check(busy == o.limit, ("%s restart: all %d slots%s in use again within 5 s (%d at most)"):format(
          x.mode, o.limit, o.by and " of a partition" or "", busy))
      end
      local after = table.concat(one:workers(), ",") .. "/" .. table.concat(many:workers(), ",")
      r:check(before == after, "the workers reconnected by themselves: the same worker processes", one)
      r:check(one:stop() == 0, "the supervisor at concurrency 1 stopped gracefully", one)
      r:check(many:stop() == 0, "the supervisor at concurrency 4 stopped gracefully", many)
      rec:read()
      local lost, dups = rec:check(ids)
      r:count(ids, rec, lost, dups, lib.cut_by_restart(restarts, "its outcome cut off by a restart"))
    end,
  }
end

-- the scenario, which also carries the builder for limit_restart_parts
local scenario = restart_scenario {
  title = "a name limited to 3 at once; PostgreSQL restarted (immediate, then fast) meanwhile",
  name = "limit_restart", label = "limitrestart", limit = limit_kill.LIMIT,
  restarts = { { at = 2, mode = "immediate" }, { at = 6, mode = "fast" } },
}
scenario.restart_scenario = restart_scenario
return scenario
