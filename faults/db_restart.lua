--- Scenario 3, database restart: PostgreSQL is restarted in fast mode, then
-- in immediate mode (a crash: no checkpoint, sessions cut), while
-- `lua-scheduler run --workers 4` runs the jobs that a producer process
-- schedules one at a time.  The workers must reconnect by themselves (no
-- worker process dies), no job may be lost, and schedule() during an outage
-- must return nil, err, never an id of a job that does not exist: every id
-- the producer got back must run, with the producer's own sequence number.
local lib = require "faults.lib"

return {
  title = "database restart (fast, then immediate) under a producer and 4 workers",
  recovery = "the server accepts connections again -> every worker has run a job",
  run = function(ctx, r)
    local workers, seconds = 4, 24
    local restarts = { { at = 6, mode = "fast" }, { at = 14, mode = "immediate" } }
    lib.clear_jobs()
    local records = lib.tmpdir("restart-records")
    local rec = lib.records(records)
    local sup = lib.start_run("restart", workers, records)
    r:check(sup:wait_log("started: listeners", workers, 20), "the 4 workers started", sup)
    local before = sup:workers()

    local calls = lib.tmpdir("restart-producer") .. "/calls"
    local producer = lib.start("producer", { lib.LUA, lib.ROOT .. "/faults/producer.lua", calls,
      tostring(seconds), "0.002" })
    local t0 = lib.now()
    lib.restart_at(ctx, restarts, t0, "db_restart")
    r:check(producer:wait(seconds + 30) == 0, "the producer finished", producer)

    -- the producer's calls
    local ok_calls, refused, by_seq, sample = {}, 0, {}, nil
    for line in (lib.read_file(calls) or ""):gmatch("[^\n]+") do
      local seq, t_start, t_end, how, rest = line:match("^(%d+) (%S+) (%S+) (%a+) (.*)$")
      if seq then
        local c = { seq = tonumber(seq), t_start = tonumber(t_start), t_end = tonumber(t_end) }
        if how == "ok" then
          c.id = tonumber(rest)
          ok_calls[#ok_calls + 1] = c
        else
          refused = refused + 1
          c.err = rest
          sample = sample or rest
        end
        by_seq[c.seq] = c
      end
    end
    local ids = {}
    for _, c in ipairs(ok_calls) do ids[#ids + 1] = c.id end
    r.scheduled = #ids
    r:note(("schedule() calls: %d returned an id, %d returned nil, err (e.g. %q)"):format(#ids, refused,
      sample or "-"))
    r:check(refused > 0, "the producer saw the outages (some schedule() calls returned nil, err)")
    r:check(r.scheduled > 0, "the producer scheduled jobs")

    rec:wait_all(ids, 60)
    lib.sleep(1) -- would anything run twice?
    rec:read()
    -- no false id: each id returned ran with the payload of the call that returned it
    local false_ids = 0
    for _, c in ipairs(ok_calls) do
      for _, run in ipairs(rec.by_id[c.id] or {}) do
        if run.seq ~= c.seq then false_ids = false_ids + 1 end
      end
    end
    r:check(false_ids == 0, ("no false id: every id returned ran with its own payload (%d mismatches)")
      :format(false_ids))
    -- jobs whose schedule() call failed but that committed anyway (the
    -- connection broke after the commit): allowed, the caller was told the
    -- outcome is unknown
    local unacknowledged = 0
    for _, run in ipairs(rec.runs) do
      local c = by_seq[run.seq]
      if c and c.err then unacknowledged = unacknowledged + 1 end
    end
    r:note(("%d jobs ran although their schedule() call returned an error (committed just before"
      .. " the connection broke)"):format(unacknowledged))

    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, lib.cut_by_restart(restarts, "in a batch whose commit a restart cut off"))

    -- recovery: the first job run after each restart, and each worker's
    local workers_back = 0
    for _, x in ipairs(restarts) do
      local first, per_pid = math.huge, {}
      for _, run in ipairs(rec.runs) do
        if run.start > x.t_end then
          first = math.min(first, run.start)
          per_pid[run.pid] = math.min(per_pid[run.pid] or math.huge, run.start)
        end
      end
      local n, last = 0, 0
      for _, t in pairs(per_pid) do
        n = n + 1
        last = math.max(last, t)
      end
      r:recovered(x.mode .. ": server down", x.t_end - x.t_begin)
      if first < math.huge then
        r:recovered(x.mode .. ": ready -> first job", first - x.t_end)
        r:recovered(x.mode .. ": ready -> all " .. n .. " workers ran a job", last - x.t_end, x.mode)
      end
      r:check(n == workers, ("%s restart: all %d workers ran jobs again (%d did)"):format(x.mode, workers, n))
      workers_back = workers_back + n
      local first_ok = math.huge
      for _, c in ipairs(ok_calls) do
        if c.t_start > x.t_end then first_ok = math.min(first_ok, c.t_end) end
      end
      if first_ok < math.huge then r:recovered(x.mode .. ": ready -> schedule() ok", first_ok - x.t_end) end
    end
    local after = sup:workers()
    r:check(table.concat(before, ",") == table.concat(after, ","),
      "the workers reconnected by themselves: the same worker processes before and after", sup)
    r:check(sup:count_log("database available again") >= 2 * workers,
      "every worker logged its reconnection after each restart", sup)
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    local late = {}
    for _, run in ipairs(rec.runs) do late[#late + 1] = run.start - run.run_at end
    r.lateness = lib.spread(late)
  end,
}
