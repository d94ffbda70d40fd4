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
local lib = require "faults.lib"
local limit_kill = require "faults.limit_kill"

local LIMIT, SLEEP = limit_kill.LIMIT, limit_kill.SLEEP

return {
  title = "a name limited to 3 at once; PostgreSQL restarted (immediate, then fast) meanwhile",
  recovery = "never more than 3 at once; server ready -> the limited name runs again",
  run = function(ctx, r)
    local restarts = { { at = 2, mode = "immediate" }, { at = 6, mode = "fast" } }
    local rec, one, many, ids = limit_kill.setup(ctx, r, "limitrestart")
    local before = table.concat(one:workers(), ",") .. "/" .. table.concat(many:workers(), ",")
    r.scheduled = #ids
    local t0 = lib.now()
    for _, x in ipairs(restarts) do
      lib.sleep(math.max(0, t0 + x.at - lib.now()))
      x.t_begin = lib.now()
      lib.pg_restart(ctx.pgdir, x.mode)
      x.t_end = lib.now()
      lib.log("limit_restart: %s restart took %.2f s", x.mode, x.t_end - x.t_begin)
    end
    r:check(rec:wait_all(ids, 90), "every job ran", one)
    lib.sleep(1) -- would anything run twice?
    rec:read()
    local most, t1 = lib.most_at_once(rec.runs, SLEEP)
    local down = 0
    for _, x in ipairs(restarts) do down = down + (x.t_end - x.t_begin) end
    local ideal = #ids * SLEEP / LIMIT
    r:note(("at most %d runs at once (limit %d); drained in %.2f s, of which the server was down %.2f s;"
      .. " ideal %.2f s"):format(most, LIMIT, t1 - t0, down, ideal))
    r:check(most <= LIMIT, ("never more than %d at once (%d)"):format(LIMIT, most))
    for _, x in ipairs(restarts) do
      local first = math.huge
      for _, run in ipairs(rec.runs) do
        if run.start > x.t_end then first = math.min(first, run.start) end
      end
      -- the slots filled again: LIMIT runs at once within 5 s of the server's return
      local again = {}
      for _, run in ipairs(rec.runs) do
        if run.start > x.t_end and run.start < x.t_end + 5 then again[#again + 1] = run end
      end
      local busy = lib.most_at_once(again, SLEEP)
      r:recovered(x.mode .. ": server down", x.t_end - x.t_begin)
      if first < math.huge then r:recovered(x.mode .. ": ready -> first job", first - x.t_end, x.mode) end
      r:check(first < math.huge, x.mode .. " restart: the limited name ran again")
      r:check(busy == LIMIT, ("%s restart: all %d slots in use again within 5 s (%d at most)"):format(
        x.mode, LIMIT, busy))
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
