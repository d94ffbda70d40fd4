--- Scenario: no write stalls a sleeping worker (issue 14, item 5).  Two
-- workers (`lua-scheduler run --workers 2`), and:
--   1. a recurring schedule declared by another process while the workers
--      sleep, its first slot 2-3 s later: first with no other schedule of
--      their name, then while they know of one due next year (they must
--      still see the new, earlier one).  Reported: the time from the
--      declaration to its first job's start, and how late that start is.
--   2. a probe producer schedules a job every 4 ms, alternately due at
--      once and 20 ms later (the workers sleep until those), while another
--      process calls schedule_many() with 1,000,000 jobs (scaled) of the
--      workers' own name: all due in an hour, except the first and the
--      last, due at once (its commit must wake the workers for them);
--   3. then, probes still running, an application transaction schedules
--      jobs with SQL (scheduler.schedule() and a plain INSERT) and holds
--      the advisory lock that schedule() tries (SLEEP_LOCK in
--      csrc/store_pg_wake.c) for 3 s, as our INSERT would inside a transaction.
-- The lateness column is the probes due while 2 and 3 lasted (start minus
-- run_at, from the independent record).  Two controls go with it: before
-- the insert, the probes while two processes only burn CPU for a few
-- seconds (the insert keeps both cores of a small machine busy: "N of M
-- cores busy" from /proc/stat for both), and the time of the probes'
-- schedule() calls in each phase (a commit waits for the WAL flush of the
-- insert's rows written before it; so does each worker's).  A lost probe or job fails it, and
-- so do the workers waiting for the writes (the old SLEEP_LOCK made every
-- sleeping worker wait for the whole schedule_many: probes up to 12 s
-- late during a 22 s insert), or reading the insert's uncommitted rows
-- at every claim (p99 231-294 ms, max 424-482 ms, before the claim's walk
-- of the priorities started at 0), judged generously for a shared VM: a
-- probe later than 1 s during either.
local lib = require "faults.lib"
local scheduler = require "scheduler"

-- SLEEP_LOCK of csrc/store_pg_internal.h
local SLEEP_LOCK = "1935895653, 0"

--- The probe producer's calls (see faults/probe.lua).
local function read_calls(path)
  local calls, errors, sample = {}, 0, nil
  for line in (lib.read_file(path) or ""):gmatch("[^\n]+") do
    local seq, t0, t1, how, rest = line:match("^(%d+) (%S+) (%S+) (%a+) (.*)$")
    if seq and how == "ok" then
      calls[#calls + 1] = { seq = tonumber(seq), t0 = tonumber(t0), t1 = tonumber(t1), id = tonumber(rest) }
    elseif seq then
      errors = errors + 1
      sample = sample or rest
    end
  end
  return calls, errors, sample
end

--- The first run of the record whose payload seq is `seq`.
local function run_of_seq(rec, seq)
  rec:read()
  for _, run in ipairs(rec.runs) do
    if run.seq == seq then return run end
  end
end

--- Declare recurring schedule `id` from another process, its first slot
-- 2-3 s from now, then every minute; returns the time cron() returned.
local function declare_elsewhere(id, seq)
  local sec = (math.floor(lib.now()) + 3) % 60
  local code = ([[
local scheduler = require "scheduler"
local s = scheduler.new { log = false }
assert(s:cron(%q, %q, "fault", { seq = %d }))
io.write(("%%.6f\n"):format(scheduler.now()))
s:close()]]):format(id, sec .. " * * * * *", seq)
  local out, ok = lib.sh(("%s -e %s"):format(lib.q(lib.LUA), lib.q(code)))
  assert(ok, out)
  return tonumber(out:match("([%d%.]+)%s*$"))
end

local function ms(s) return ("%.1f ms"):format(s * 1000) end

--- The machine's CPU counters (/proc/stat: busy and total jiffies, all cores).
local function cpu_sample()
  local line = (lib.read_file("/proc/stat") or ""):match("^cpu%s+([^\n]+)")
  if not line then return nil end
  local f, total = {}, 0
  for v in line:gmatch("%d+") do f[#f + 1] = tonumber(v); total = total + f[#f] end
  local ncpu = select(2, (lib.read_file("/proc/stat") or ""):gsub("\ncpu%d+", ""))
  return { busy = total - f[4] - (f[5] or 0), total = total, ncpu = ncpu }
end

--- "N of M cores busy" between two cpu_sample()s.
local function cores_busy(a, b)
  if not (a and b) or b.total <= a.total then return "?" end
  return ("%.2f of %d cores busy"):format((b.busy - a.busy) / (b.total - a.total) * a.ncpu, a.ncpu)
end

--- "N ms after" or "N ms before" (a start may come before the moment a
-- client learns that its write committed).
local function after(dt, what)
  return dt >= 0 and ("%s after %s"):format(ms(dt), what) or ("%s before %s"):format(ms(-dt), what)
end

return {
  title = "no write stalls a sleeping worker: a 1,000,000-job schedule_many, a long transaction, a cron",
  recovery = "a cron declared by another process -> its first job starts",
  run = function(ctx, r)
    local n = math.max(1000, ctx.size(1000000))
    lib.clear_jobs()
    lib.psql("DELETE FROM scheduler.crons WHERE name = 'fault'")
    lib.on_cleanup(function()
      -- and VACUUM: the next scenarios use the same name, and the index
      -- entries of a million deleted jobs slowed their claims until
      -- autovacuum came (limit_kill drained in 47 s instead of 11 once,
      -- limit_restart's slots stayed empty for 5 s)
      lib.psql("DELETE FROM scheduler.jobs WHERE name = 'fault';"
        .. " DELETE FROM scheduler.crons WHERE name = 'fault'; VACUUM scheduler.jobs")
    end)
    local records = lib.tmpdir("bulk-records")
    local rec = lib.records(records)
    local sup = lib.start_run("bulk", 2, records)
    r:check(sup:wait_log("started: listeners", 2, 20), "the 2 workers started", sup)
    lib.sleep(0.5)
    local ids = {}

    -- 1: recurring schedules declared elsewhere while the workers sleep
    for k, case in ipairs { { id = "bulk-cron-a", seq = -20, label = "no other schedule" },
      { id = "bulk-cron-b", seq = -21, label = "a schedule due next year known" } } do
      if k == 2 then
        local s <close> = scheduler.new { log = false }
        assert(s:cron("bulk-cron-far", "0 0 1 1 *", "fault", { seq = -22 }))
        -- a job due now makes both workers look again, and see that schedule
        local id = assert(s:schedule("fault", { seq = -23 }))
        ids[#ids + 1] = id
        rec:wait_all({ id }, 10)
        lib.sleep(0.5)
      end
      local t_decl = declare_elsewhere(case.id, case.seq)
      local run = lib.wait_for(function() return run_of_seq(rec, case.seq) end, 25, 0.02)
      if r:check(run, ("%s: the first job of a schedule declared elsewhere ran"):format(case.label)) then
        r:recovered(("%s: declared -> its first job started (its slot %.2f s after the declaration;"
          .. " started %s)"):format(case.label, run.run_at - t_decl, after(run.start - run.run_at, "it")),
          run.start - t_decl, k == 1 and "cron" or "cron, known")
        r:check(run.start - run.run_at < 1, ("%s: it started within a second of its slot (%s)")
          :format(case.label, ms(run.start - run.run_at)))
        ids[#ids + 1] = run.id
      end
    end
    lib.psql("DELETE FROM scheduler.crons WHERE name = 'fault'")

    local dir = lib.tmpdir("bulk-probe")
    local calls_path, stop = dir .. "/calls", dir .. "/stop"
    local probe = lib.start("probe", { lib.LUA, lib.ROOT .. "/faults/probe.lua", calls_path, stop, "600",
      "0.004", "0.02" })
    lib.sleep(1) -- probes alone first: the reference

    -- the control: the same probes while two processes only burn CPU for
    -- as long as a scaled insert takes (the insert keeps both cores of a
    -- small machine busy: its client and its server backend), no write
    local burn_s = math.min(5, math.max(1, n / 200000))
    local burn_t0, burn_cpu0 = lib.now(), cpu_sample()
    local burners = {}
    for i = 1, 2 do
      burners[i] = lib.start("burn" .. i, { lib.LUA, "-e",
        ("local x = 0; while os.clock() < %g do x = x + 1 end"):format(burn_s) })
    end
    for i = 1, 2 do r:check(burners[i]:wait(burn_s + 10) == 0, "the CPU burner finished", burners[i]) end
    local burn_t1, burn_cpu1 = lib.now(), cpu_sample()
    lib.sleep(0.5)

    -- 2: the bulk insert
    local bulk_out = dir .. "/bulk"
    local bulk = lib.start("bulk", { lib.LUA, lib.ROOT .. "/faults/bulk.lua", bulk_out, tostring(n), "3600" })
    local waiting = 0 -- workers seen waiting for an advisory lock
    local bulk_cpu0, bulk_cpu1
    lib.wait_for(function()
      if not bulk_cpu0 and (lib.read_file(bulk_out) or ""):find("start") then bulk_cpu0 = cpu_sample() end
      local w = tonumber(lib.psql_value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        .. " AND NOT granted")) or 0
      if w > waiting then waiting = w end
      return bulk:exit_code() ~= nil
    end, 600, 0.05)
    bulk_cpu1 = cpu_sample()
    r:check(bulk:wait(5) == 0, "the schedule_many process finished", bulk)
    local text = lib.read_file(bulk_out) or ""
    local bulk_t0 = tonumber(text:match("start (%S+)"))
    local bulk_t1, first, last = text:match("ok (%S+) (%d+) (%d+)")
    bulk_t1, first, last = tonumber(bulk_t1), tonumber(first), tonumber(last)
    if not r:check(bulk_t0 and bulk_t1, ("schedule_many of %s jobs returned their ids (%s)"):format(
        lib.commas(n), text:gsub("\n", " "))) then
      return
    end
    r:note(("schedule_many of %s jobs took %.2f s (%s); at most %d workers seen waiting for an advisory lock"
      .. " (sampled every 0.05 s)"):format(lib.commas(n), bulk_t1 - bulk_t0, cores_busy(bulk_cpu0, bulk_cpu1), waiting))
    lib.sleep(1)

    -- 3: a long transaction that schedules jobs and holds schedule()'s lock
    local tx_t0 = lib.now()
    local tx = lib.start("tx", { lib.PGBIN .. "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c",
      "BEGIN;"
        .. " SELECT scheduler.schedule('fault', '{\"seq\": -10}');"
        .. " INSERT INTO scheduler.jobs (name, payload) VALUES ('fault', '{\"seq\": -11}');"
        .. " SELECT pg_advisory_xact_lock(" .. SLEEP_LOCK .. ");"
        .. " SELECT pg_sleep(3);"
        .. " SELECT 'committing ' || extract(epoch FROM clock_timestamp());"
        .. " COMMIT;" },
      { PGHOST = ctx.pgdir, PGPORT = os.getenv("PGTMP_PORT"), PGDATABASE = os.getenv("PGDATABASE") or "scheduler_test",
        PGUSER = os.getenv("PGUSER") or "postgres" })
    r:check(tx:wait(30) == 0, "the application transaction committed", tx)
    local tx_t1 = tonumber(tx:out():match("committing (%S+)")) or lib.now()
    lib.sleep(1)
    lib.write_file(stop, "")
    r:check(probe:wait(20) == 0, "the probe producer finished", probe)

    local calls, errors, sample = read_calls(calls_path)
    r:check(errors == 0, ("every schedule() of a probe returned an id (%d errors, e.g. %s)"):format(errors,
      tostring(sample)))
    for _, c in ipairs(calls) do ids[#ids + 1] = c.id end
    ids[#ids + 1], ids[#ids + 2] = first, last
    rec:wait_all(ids, 30)
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end) -- no kills: any duplicate is unexplained

    -- lateness of the probes due while the writes lasted, and before them
    local during, now_late, ahead_late, call_time, tx_late, before, burn = {}, {}, {}, {}, {}, {}, {}
    -- a job cannot start before its own insert commits, which the insert
    -- makes slow (its schedule() call's time): the part of the lateness
    -- the workers own is the start minus run_at or the call's return,
    -- whichever is later
    local owned, before_call, burn_call = {}, {}, {}
    for _, c in ipairs(calls) do
      local run = rec.by_id[c.id] and rec.by_id[c.id][1]
      if run then
        local late = run.start - run.run_at
        if run.run_at >= bulk_t0 and run.run_at <= bulk_t1 then
          during[#during + 1] = late
          owned[#owned + 1] = run.start - math.max(run.run_at, c.t1)
          local kind = c.seq % 2 == 0 and ahead_late or now_late
          kind[#kind + 1] = late
          call_time[#call_time + 1] = c.t1 - c.t0
        elseif run.run_at >= tx_t0 and run.run_at <= tx_t1 then
          tx_late[#tx_late + 1] = late
        elseif run.run_at >= burn_t0 and run.run_at <= burn_t1 then
          burn[#burn + 1] = late
          burn_call[#burn_call + 1] = c.t1 - c.t0
        elseif run.run_at < burn_t0 then
          before[#before + 1] = late
          before_call[#before_call + 1] = c.t1 - c.t0
        end
      end
    end
    local all = table.move(tx_late, 1, #tx_late, #during + 1, table.move(during, 1, #during, 1, {}))
    r.lateness = lib.spread(all)
    local sp_during, sp_tx = lib.spread(during), lib.spread(tx_late)
    r:note(("probes due during the schedule_many: %d, lateness p50/p99/max %s"):format(#during,
      lib.fmt_spread(sp_during)))
    r:note(("  of them due at once: %s; due 20 ms after the call: %s; their schedule() calls took %s")
      :format(lib.fmt_spread(lib.spread(now_late)), lib.fmt_spread(lib.spread(ahead_late)),
        lib.fmt_spread(lib.spread(call_time))))
    r:note(("  after their schedule() returned (or run_at, if later): %s")
      :format(lib.fmt_spread(lib.spread(owned))))
    r:note(("probes due while the transaction was open: %d, lateness %s"):format(#tx_late, lib.fmt_spread(sp_tx)))
    r:note(("probes due before the schedule_many (reference): %d, lateness %s; their schedule() calls took %s")
      :format(#before, lib.fmt_spread(lib.spread(before)), lib.fmt_spread(lib.spread(before_call))))
    r:note(("probes due while two processes only burned CPU (control, %.1f s, %s, no write): %d, lateness %s;"
      .. " their schedule() calls took %s"):format(burn_t1 - burn_t0, cores_busy(burn_cpu0, burn_cpu1), #burn,
      lib.fmt_spread(lib.spread(burn)), lib.fmt_spread(lib.spread(burn_call))))
    if r:check(sp_during and sp_tx, "probes came due during both") then
      r:check(sp_during.max < 1000, ("no probe waited for the schedule_many (max %s < 1 s, during %s)")
        :format(ms(sp_during.max / 1000), ms(bulk_t1 - bulk_t0)))
      r:check(sp_tx.max < 1000, ("no probe waited for the transaction (max %s < 1 s)"):format(ms(sp_tx.max / 1000)))
    end
    for _, x in ipairs { { first, "first" }, { last, "last" } } do
      local run = rec.by_id[x[1]] and rec.by_id[x[1]][1]
      if r:check(run, "the " .. x[2] .. " job of the schedule_many (due at once) ran") then
        r:note(("its %s job (due at once) started %s"):format(x[2],
          after(run.start - bulk_t1, "schedule_many returned (with the ids of all jobs)")))
      end
    end
    for _, seq in ipairs { -10, -11 } do
      local run = run_of_seq(rec, seq)
      if r:check(run, ("the transaction's job seq %d ran"):format(seq)) then
        r:note(("the transaction's job seq %d started %s"):format(seq, after(run.start - tx_t1, "its COMMIT was sent")))
      end
    end
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
  end,
}
