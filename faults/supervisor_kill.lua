--- Issue 14, item 7: the supervisor under kill -9.  A: kill -9 of a random
-- worker of `lua-scheduler run --workers 4` every 2 s while jobs come due
-- over 20 s: each killed worker is replaced at once (it died young, but not
-- of its own accord: no crash loop), and the jobs wait no lease.  Before,
-- the supervisor called that a crash loop and waited up to 30 s to restart
-- (p99 lateness 7.7 s).  B: a release in progress during a database
-- restart: the dead worker's lock is still held (as by a session the
-- server has not ended yet), so the release finds it "still connected" and
-- tries again; the restart ends that session and cuts the supervisor's
-- connection ("server closed the connection"); the release is tried again
-- until it works, and the job runs again right after the restart instead of
-- after its lease (30 s).
local lib = require "faults.lib"
local scheduler = require "scheduler"

local WORKER_LOCK = 1935895652 -- store_pg_internal.h

return {
  title = "supervisor: kill -9 of a random worker every 2 s; a database restart during a release",
  recovery = "kill -9 -> a new worker in its place (max of the kills); restart during a release -> the dead worker's job runs again",
  run = function(ctx, r)
    local n, spread, workers = ctx.size(10000), 20, 4
    lib.clear_jobs()
    local records = lib.tmpdir("supkill-records")
    local rec = lib.records(records)
    local sup = lib.start_run("supkill", workers, records)
    r:check(sup:wait_log("started: listeners", workers, 20), "the 4 workers started", sup)
    local s <close> = scheduler.new { log = false }

    -- A: a kill every 2 s
    local ids, t0 = lib.schedule_spread(s, n, spread, 0.002)
    r.scheduled = #ids
    local killed, restarts = {}, {}
    for k = 1, spread // 2 do
      lib.sleep(math.max(0, t0 + 2 * k - lib.now()))
      local live = sup:workers()
      if #live == workers then
        local pid = live[math.random(#live)]
        local t = lib.now()
        assert(require("scheduler.core").process.kill(pid, "KILL"))
        killed[pid] = t
        local back = lib.wait_for(function()
          local now = sup:workers()
          if #now ~= workers then return false end
          for _, p in ipairs(now) do if p == pid then return false end end
          return true
        end, 40, 0.002)
        restarts[#restarts + 1] = back and lib.now() - t or math.huge
      end
    end
    rec:wait_all(ids, 90)
    rec:read()
    r:check(#restarts >= spread // 2 - 1, ("%d workers killed with kill -9"):format(#restarts))
    local worst = 0
    for _, d in ipairs(restarts) do worst = math.max(worst, d) end
    local sp = lib.spread(restarts)
    r:recovered("kill -9 -> a new worker in its place (max)", worst, "restart")
    r:note(("restart after kill -9: p50 %.1f ms, max %.1f ms over %d kills"):format(sp.p50, sp.max, #restarts))
    r:check(worst <= 0.25, ("every killed worker replaced within 0.25 s (max %.3f s)"):format(worst))
    r:check(sup:count_log("crash-looping") == 0, "no crash loop reported", sup)
    r:check(sup:count_log("restarting worker") == sup:count_log("(killed from outside)"),
      "every restart was at once", sup)
    local late = {}
    for _, run in ipairs(rec.runs) do late[#late + 1] = run.start - run.run_at end
    r.lateness = lib.spread(late)
    r:check(r.lateness.p99 < 1000, ("p99 lateness under 1 s (%.1f ms)"):format(r.lateness.p99))

    -- B: a database restart during a release
    local slow = assert(s:schedule(lib.JOB, { seq = -2, sleep_first = 60 }))
    local first = lib.wait_for(function() rec:read(); return (rec.by_id[slow] or {})[1] end, 10, 0.01)
    r:check(first, "the slow job started", sup)
    local leased = lib.wait_for(function() return lib.leased(s, slow) end, 5, 0.01)
    r:check(leased, "the slow job is leased (its batch settled)", sup)
    if first and leased then
      -- a session holding the worker's lock, as the worker's own would
      -- until the server ends it
      local holder = lib.start("lock-holder", { lib.PGBIN .. "/psql", "-X", "-q", "-c",
        ("SELECT pg_advisory_lock(%d, hashtext('%s'))"):format(WORKER_LOCK, leased.locked_by:gsub("'", "''")),
        "-c", "SELECT pg_sleep(60)" })
      r:check(lib.wait_for(function()
        return lib.psql_value(("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
          .. " AND classid = %d AND objid = hashtext('%s')::oid"):format(WORKER_LOCK,
          leased.locked_by:gsub("'", "''"))) == "1"
      end, 5), "a session holds the worker's lock", holder)
      local t_kill = lib.now()
      assert(require("scheduler.core").process.kill(first.pid, "KILL"))
      killed[first.pid] = t_kill
      r:check(sup:wait_log("is still connected to the database: nothing released", 1, 5),
        "the release found the worker still connected and released nothing", sup)
      local early = rec:run_after(slow, t_kill, 0.5)
      r:check(not early, "the job did not run again while the lock was held")
      local t_begin = lib.now()
      lib.pg_restart(ctx.pgdir, "fast")
      local t_ready = lib.now()
      lib.log("supervisor_kill: restart took %.2f s", t_ready - t_begin)
      local again = rec:run_after(slow, t_kill, 20)
      r:check(again, "the dead worker's job ran again", sup)
      if again then
        r:recovered("database restart during a release: ready -> the job runs again", again.start - t_ready,
          "release after restart")
        r:check(again.start - t_ready < 5, ("right after the restart, not after its lease: %.2f s"):format(
          again.start - t_ready))
      end
      r:check(sup:count_log("could not release the jobs of worker") >= 2,
        "the release failed (still connected, then the connection cut) and was tried again", sup)
      r:check(sup:count_log(" at try ") >= 1, "until it worked", sup)
      ids[#ids + 1] = slow
    end
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    rec:read()
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, lib.in_flight_at_kill(killed))
  end,
}
