-- Many workers on one database: instances in one process, worker processes,
-- kill -9 and leases, heartbeats, signals, LISTEN/NOTIFY wake-ups and
-- concurrent migrations.  Worker processes are spec/support/worker.lua,
-- started by helper.spawn; every one is killed by helper.cleanup().
local helper = require "spec.helper"

-- Every job id of `ids` appears exactly once among `records`.
local function assert_exactly_once(ids, records, context)
  local tally = helper.tally(records, "id")
  local missing, dup = {}, {}
  for _, id in ipairs(ids) do
    local n = tally[id] or 0
    if n == 0 then missing[#missing + 1] = id elseif n > 1 then dup[#dup + 1] = id .. "x" .. n end
    tally[id] = nil
  end
  local extra = {}
  for id in pairs(tally) do extra[#extra + 1] = id end
  local function list(t) return #t .. " (" .. table.concat(t, ",", 1, math.min(#t, 10)) .. ")" end
  if #missing > 0 or #dup > 0 or #extra > 0 then
    error(("not exactly once: missing %s, duplicated %s, unexpected %s%s"):format(
      list(missing), list(dup), list(extra), context and ("\n" .. context) or ""), 2)
  end
end

local describe_all = helper.describe_all

describe("workers", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  describe("two instances in one process", function()
    it("compete for the same jobs and run each exactly once", function()
      local name = helper.name("compete")
      local s2 = helper.new()
      local ids = {}
      for i = 1, 200 do ids[i] = helper.schedule(s, name, i) end
      local records = {}
      local inner
      s:on(name, function(_, job)
        records[#records + 1] = { id = job.id, by = 1 }
        if inner == nil then
          inner = false
          inner = table.pack(s2:run{ drain = true })
        end
      end)
      s2:on(name, function(_, job) records[#records + 1] = { id = job.id, by = 2 } end)
      local n1 = s:run{ drain = true }
      assert.equals("integer", math.type(n1))
      assert.is_table(inner)
      assert.equals("integer", math.type(inner[1]), tostring(inner[2]))
      assert_exactly_once(ids, records)
      assert.equals(200, n1 + inner[1])
      assert.equals(0, helper.count_jobs(name))
    end)

    it("do not run jobs the other one has claimed, even when it stops", function()
      local name = helper.name("compete-stop")
      local s2 = helper.new()
      local ids = {}
      for i = 1, 20 do ids[i] = helper.schedule(s, name, i) end
      local records = {}
      s:on(name, function(_, job)
        records[#records + 1] = { id = job.id }
        s:stop()
      end)
      s2:on(name, function(_, job) records[#records + 1] = { id = job.id } end)
      assert.is_true(s:run{ seconds = 10 })
      assert.equals(1, #records)
      -- everything s claimed but did not start is released for s2
      assert.equals(19, s2:run{ drain = true })
      assert_exactly_once(ids, records)
    end)
  end)

  -- PostgreSQL claims the next batch in the same transaction while a full
  -- batch runs (store_pg_claim.c, CLAIM AHEAD); batches of 5 make every batch
  -- of these tests full.
  describe("the batch claimed ahead #postgresql", function()
    local function ahead_worker() return helper.new{ batch_max = 5 } end

    it("runs every job once, whether the claim ahead finds a full batch, a short one or none", function()
      for _, total in ipairs{ 10, 12, 23 } do
        local name = helper.name("ahead-" .. total)
        local ids = {}
        for i = 1, total do ids[i] = helper.schedule(s, name, i) end
        local w = ahead_worker()
        local records = {}
        w:on(name, function(_, job) records[#records + 1] = { id = job.id, attempt = job.attempt } end)
        assert.equals(total, w:run{ drain = true })
        assert_exactly_once(ids, records)
        for _, r in ipairs(records) do assert.equals(1, r.attempt) end
        assert.equals(0, helper.count_jobs(name))
      end
    end)

    it("goes back unattempted when run() stops, and keeps the last errors of its jobs intact", function()
      local name = helper.name("ahead-stop")
      local ids = {}
      for i = 1, 20 do ids[i] = helper.schedule(s, name, i) end
      -- failed before, with an error that is hard to quote: job 4 goes back
      -- from the batch that stops, job 8 from the batch claimed ahead
      local msg = 'boom, "quoted" \\ back {braces} NULL'
      for _, i in ipairs{ 4, 8 } do
        helper.psql(("UPDATE scheduler.jobs SET attempt = 1, last_error = %s WHERE id = %d")
          :format(helper.literal(msg), ids[i]))
      end
      local w = ahead_worker()
      local ran = {}
      w:on(name, function(_, job)
        ran[#ran + 1] = job.id
        if #ran == 2 then w:stop() end
      end)
      assert.is_true(w:run{ seconds = 10 })
      assert.same({ ids[1], ids[2] }, ran)
      for i = 3, 20 do
        local j = assert(s:job(ids[i]), "job " .. i .. " is gone")
        assert.equals("scheduled", j.state)
        assert.equals((i == 4 or i == 8) and 1 or 0, j.attempt, "job " .. i)
        assert.equals((i == 4 or i == 8) and msg or nil, j.last_error, "job " .. i)
      end
      local again = {}
      local w2 = helper.new()
      w2:on(name, function(_, job) again[#again + 1] = { id = job.id } end)
      assert.equals(18, w2:run{ drain = true })
      assert_exactly_once(table.move(ids, 3, 20, 1, {}), again)
    end)

    it("comes back with the batch in hand and the uncommitted ones when the worker is killed", function()
      local name = helper.name("ahead-kill")
      local ids = {}
      for i = 1, 30 do ids[i] = helper.schedule(s, name, i == 13 and { sleep = 60 } or i) end
      local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_BATCH_MAX = 5 }
      assert.is_truthy(helper.wait_for(function() return a:events("start", ids[13])[1] end, 10),
        a:describe())
      assert.is_true(a:kill("KILL")) -- before the heartbeat settles the batch (a second)
      assert.equals(137, a:wait(5), a:describe())
      assert.is_truthy(helper.wait_worker_gone(a))
      local b = helper.new()
      local again = {}
      b:on(name, function(_, job) again[#again + 1] = { id = job.id, attempt = job.attempt } end)
      b:run{ drain = true }
      -- at least once: every job ran to its end in a or runs in b, exactly
      -- once in b, and none is charged: a's transaction aborted, and the
      -- batch in hand (11-15), recorded, runs first, in quarantine; the
      -- batches before it had run, and the one claimed ahead had not started
      local by_id = {}
      for k, r in ipairs(again) do
        assert.is_nil(by_id[r.id], "ran twice in b: " .. r.id)
        by_id[r.id] = r.attempt
        if k <= 5 then assert.equals(ids[10 + k], r.id, "quarantined first, in claim order") end
      end
      for i, id in ipairs(ids) do
        local finished = #a:events("done", id) == 1
        assert.is_true(finished or by_id[id] ~= nil, "job " .. i .. " lost\n" .. a:describe())
        if by_id[id] then assert.equals(1, by_id[id], "job " .. i) end
      end
      assert.equals(0, helper.count_jobs(name))
    end)

    it("loses nothing when the connection drops with a batch claimed ahead", function()
      local name = helper.name("ahead-lost")
      local ids = {}
      for i = 1, 20 do ids[i] = helper.schedule(s, name, i) end
      -- (warned when a later claim finds the loss; said as an error when
      -- the run's time ends first, by the last write of the run: on a
      -- loaded machine, run{ seconds = 0.5 } may end right after the
      -- first batch)
      local warnings = {}
      local w = helper.new{ batch_max = 5, log = function(level, message)
        if level == "warn" or level == "error" then warnings[#warnings + 1] = message end
      end }
      local ran, runs = {}, 0
      w:on(name, function(_, job)
        runs = runs + 1
        ran[job.id] = (ran[job.id] or 0) + 1
        if runs == 3 then
          -- the worker's connection (and every other of lua-scheduler's)
          -- ends while its second batch is claimed ahead
          helper.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            .. " WHERE application_name = 'lua-scheduler'")
        end
      end)
      for _ = 1, 20 do
        assert.is_true(w:run{ seconds = 0.5 })
        if helper.count_jobs(name) == 0 then break end
      end
      assert.equals(0, helper.count_jobs(name))
      for i, id in ipairs(ids) do assert.is_truthy(ran[id], "job " .. i .. " never ran") end
      -- the first batches' transaction was lost with the connection: its
      -- jobs ran again, as the worker said
      assert.is_true(runs > 20)
      local said = table.concat(warnings, "\n")
      -- (the loss shows when the claim ahead is read, or, if libpq saw it
      -- first, when the batch ends)
      assert.is_truthy(said:find("the outcomes of 10 claimed jobs were not committed", 1, true)
        or said:find("lost with 10 jobs claimed and not committed", 1, true), said)
      assert.matches("they will run again", said)
    end)

    it("goes back when a batch runs long, and every job runs once", function()
      local name = helper.name("ahead-long")
      local ids = {}
      for i = 1, 10 do ids[i] = helper.schedule(s, name, i) end
      -- lease 2 s: the heartbeat settles a batch after 0.5 s, leasing the
      -- job in hand and giving back the rest and the batch claimed ahead
      local w = helper.new{ batch_max = 5, lease = 2 }
      local records, state = {}, nil
      w:on(name, function(_, job)
        records[#records + 1] = { id = job.id, attempt = job.attempt }
        if job.id == ids[2] then
          helper.sleep(0.8)
          state = s:job(job.id).state -- seen from another connection
        end
      end)
      assert.equals(10, w:run{ drain = true })
      assert.equals("running", state, "the long batch was not settled into a lease")
      assert_exactly_once(ids, records)
      for _, r in ipairs(records) do assert.equals(1, r.attempt) end
    end)

    it("goes back when a listener calls the API mid-batch, and every job runs once", function()
      local name, other = helper.name("ahead-api"), helper.name("ahead-api-other")
      local ids = {}
      for i = 1, 20 do ids[i] = helper.schedule(s, name, i) end
      local w = ahead_worker()
      local records = {}
      w:on(name, function(_, job)
        records[#records + 1] = { id = job.id, attempt = job.attempt }
        if job.id == ids[3] then helper.schedule(w, other, "from a listener") end
      end)
      assert.equals(20, w:run{ drain = true })
      assert_exactly_once(ids, records)
      for _, r in ipairs(records) do assert.equals(1, r.attempt) end
      assert.equals(1, helper.count_jobs(other))
    end)
  end)

  describe("processes #slow", function()
    -- the second: PostgreSQL claims ahead (store_pg_claim.c) in every batch
    for _, case in ipairs {
      { "three workers draining 500 jobs run each exactly once", {} },
      { "three workers claiming ahead in batches of 5 run each of 500 jobs exactly once #postgresql",
        { WORKER_BATCH_MAX = 5 } },
    } do
      it(case[1], function()
        local name = helper.name("drain500")
        local ids = {}
        for i = 1, 500 do ids[i] = helper.schedule(s, name, i) end
        local procs = {}
        for i = 1, 3 do
          local env = { WORKER_NAMES = name, WORKER_MODE = "drain" }
          for k, v in pairs(case[2]) do env[k] = v end
          procs[i] = helper.spawn(env)
        end
        local drained = 0
        for _, p in ipairs(procs) do
          assert.equals(0, p:wait(60), p:describe())
          drained = drained + assert(tonumber(p:file("drained")), p:describe())
        end
        assert_exactly_once(ids, helper.all_results(procs, "start"), describe_all(procs))
        assert_exactly_once(ids, helper.all_results(procs, "done"))
        assert.equals(500, drained)
        assert.equals(0, helper.count_jobs(name))
      end)
    end

    it("three running workers share a burst of jobs, each exactly once, and exit 0 on SIGTERM", function()
      local name = helper.name("burst")
      local procs = {}
      for i = 1, 3 do procs[i] = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run" } end
      for _, p in ipairs(procs) do assert(p:wait_file("ready", 10), p:describe()) end
      helper.sleep(0.5)
      local ids = {}
      local at = helper.now() + 0.5
      for i = 1, 300 do ids[i] = helper.schedule(s, name, i, i % 2 == 0 and at or nil) end
      local complete = helper.wait_for(function()
        return #helper.all_results(procs, "done") >= 300
      end, 30)
      assert.is_truthy(complete, describe_all(procs))
      helper.sleep(0.5) -- would a job run twice?
      assert_exactly_once(ids, helper.all_results(procs, "start"), describe_all(procs))
      for _, p in ipairs(procs) do p:kill("TERM") end
      for _, p in ipairs(procs) do assert.equals(0, p:wait(10), p:describe()) end
      assert.equals(0, helper.count_jobs(name))
    end)

    describe("notifications", function()
      local name, p
      before_each(function()
        name = helper.name("wake")
      end)

      local function start_idle_worker()
        p = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run" }
        assert(p:wait_file("ready", 10), p:describe())
        helper.sleep(0.7) -- let it connect, LISTEN and go to sleep
        assert.is_true(p:alive(), p:describe())
      end

      local function wait_start(id, timeout)
        return helper.wait_for(function() return p:events("start", id)[1] end, timeout or 5)
      end

      it("wake a sleeping worker when another process schedules a job due now", function()
        start_idle_worker()
        for round = 1, 2 do
          local t = helper.now()
          local id = helper.schedule(s, name, round)
          local started = wait_start(id)
          assert.is_truthy(started, "round " .. round .. ": the job did not run\n" .. p:describe())
          assert.is_true(started.time - t < 1.0,
            ("round %d: started %.3f s after scheduling"):format(round, started.time - t))
          helper.sleep(1.5) -- idle again
        end
        p:kill("TERM")
        assert.equals(0, p:wait(10), p:describe())
      end)

      it("wake a worker sleeping until a later job for an earlier one", function()
        local far = helper.schedule(s, name, "far", { delay = 60 })
        start_idle_worker()
        local t = helper.now() + 0.5
        local id = helper.schedule(s, name, "near", t)
        local started = wait_start(id)
        assert.is_truthy(started, p:describe())
        assert.is_true(started.time >= t - 0.01, ("ran %.3f s early"):format(t - started.time))
        assert.is_true(started.time - t < 1.0, ("ran %.3f s late"):format(started.time - t))
        assert.equals(0, #p:events("start", far))
        assert.equals("scheduled", helper.ok(s:job(far)).state)
      end)

      it("wake a sleeping worker for the jobs of a dead worker that abandon() hands back", function()
        local id = helper.schedule(s, name, "orphan")
        helper.sql(("UPDATE scheduler.jobs SET state = 'running', attempt = 1, locked_by = 'dead:1',"
          .. " locked_until = %s WHERE id = %d"):format(helper.sql_time(helper.now() + 3600), id))
        start_idle_worker() -- sleeping: the only job is leased for an hour
        local t = helper.now()
        assert.equals(1, helper.ok(s:abandon("dead:1")))
        local started = wait_start(id)
        assert.is_truthy(started, p:describe())
        assert.equals(2, started.attempt)
        assert.is_true(started.time - t < 1.0, ("started %.3f s after abandon()"):format(started.time - t))
      end)

      -- Found by the fault suite (make test-faults, worker_kill): on
      -- PostgreSQL, jobs put back to run by abandon() or handed back by a
      -- stopping worker sent no notification, so an idle worker found them
      -- only at its 15 s fallback check (or their old lease's end).
      it("wake a sleeping worker for jobs another worker hands back", function()
        local ids = {}
        for i = 1, 5 do ids[i] = helper.schedule(s, name, i) end
        local handed_back
        s:on(name, function()
          -- s holds all five; a second worker starts, finds nothing due and
          -- sleeps; then s stops and hands the other four back
          start_idle_worker()
          handed_back = helper.now()
          s:stop()
        end)
        assert.is_true(s:run{ seconds = 20 })
        assert.is_truthy(handed_back)
        local started = helper.wait_for(function() return #p:events("start") >= 4 end, 10)
        assert.is_truthy(started, p:describe())
        for _, e in ipairs(p:events("start")) do
          assert.is_true(e.time - handed_back < 3, ("job %d started %.3f s after it was handed back")
            :format(e.id, e.time - handed_back))
        end
      end)

      it("are sent by schedule() and schedule_many() only while a worker sleeps #postgresql", function()
        -- the wake-ups a LISTEN session receives while fn runs: those naming
        -- `name`, and those for everyone (no name)
        local function wakeups_during(fn) return helper.wakeups_during(name, fn) end
        local many = {}
        for i = 1, 17 do many[i] = { name .. "-" .. i, i } end
        -- nobody sleeps: busy workers find jobs at their next claim
        assert.same({ 0, 0 }, { wakeups_during(function()
          for i = 1, 3 do helper.schedule(s, name, i) end
          helper.ok(s:schedule_many { { name, 4 }, { name, 5 } })
          helper.ok(s:schedule_many(many))
        end) })
        start_idle_worker()
        assert.is_truthy(helper.wait_for(function() return #p:events("start") == 5 end, 5), p:describe())
        helper.sleep(0.3) -- asleep again
        local ids = {}
        assert.same({ 1, 0 }, { wakeups_during(function() ids[1] = helper.schedule(s, name, "wake") end) })
        assert.is_truthy(wait_start(ids[1]), p:describe())
        helper.sleep(0.3)
        -- schedule_many: one wake-up per name; for more than 16 names, one for everyone
        assert.same({ 1, 0 }, { wakeups_during(function()
          ids = helper.ok(s:schedule_many { { name, "a" }, { name, "b" } })
        end) })
        for _, id in ipairs(ids) do assert.is_truthy(wait_start(id), p:describe()) end
        helper.sleep(0.3)
        many[17] = { name, "last" }
        assert.same({ 0, 1 }, { wakeups_during(function() ids = helper.ok(s:schedule_many(many)) end) })
        assert.is_truthy(wait_start(ids[17]), p:describe())
      end)

      it("wake a sleeping worker for a job inserted with the SQL function #postgresql", function()
        start_idle_worker()
        local t = helper.now()
        local id = helper.psql_int(("SELECT scheduler.schedule(%s, '{\"via\":\"sql\"}'::jsonb)")
          :format(helper.literal(name)))
        local started = wait_start(id)
        assert.is_truthy(started, p:describe())
        assert.is_true(started.time - t < 1.0, ("started %.3f s after the insert"):format(started.time - t))

        -- and with a run_at a little ahead
        helper.sleep(1)
        t = helper.now()
        id = helper.psql_int(("SELECT scheduler.schedule(%s, '{}'::jsonb, now() + interval '0.5 seconds')")
          :format(helper.literal(name)))
        started = wait_start(id)
        assert.is_truthy(started, p:describe())
        assert.is_true(started.time >= t + 0.5 - 0.05, ("ran %.3f s early"):format(t + 0.5 - started.time))
        assert.is_true(started.time - (t + 0.5) < 1.0, ("ran %.3f s late"):format(started.time - t - 0.5))
      end)
    end)

    it("re-runs the job of a worker killed with kill -9 once the lease ends", function()
      local name = helper.name("kill9")
      local lease = 2
      local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = lease, WORKER_SLEEP = 60 }
      assert(a:wait_file("ready", 10), a:describe())
      local id = helper.schedule(s, name, "victim")
      local first = helper.wait_for(function() return a:events("start", id)[1] end, 10)
      assert.is_truthy(first, a:describe())
      -- once the batch is settled (after lease/4) the job is leased
      assert.is_truthy(helper.wait_for(function() return helper.leased(s, id) end, 5))
      assert.is_true(a:kill("KILL"))
      assert.equals(137, a:wait(5), a:describe())

      -- still leased by the dead worker for now
      local b = helper.new{ lease = lease }
      local rerun
      b:on(name, function(payload, job)
        rerun = { time = helper.now(), id = job.id, attempt = job.attempt, payload = payload }
        b:stop()
      end)
      assert.equals("running", helper.ok(s:job(id)).state)
      assert.equals(0, b:run{ drain = true })
      assert.is_nil(rerun)

      local elapsed, ok = helper.timed(b.run, b, { seconds = lease + 6 })
      assert.is_true(ok)
      assert.is_truthy(rerun, "the job did not come back after the lease")
      assert.equals(id, rerun.id)
      assert.equals("victim", rerun.payload)
      assert.is_true(rerun.time - first.time >= lease - 0.5,
        ("re-run %.3f s after the first start, lease %d"):format(rerun.time - first.time, lease))
      assert.is_true(rerun.time - first.time < lease + 4,
        ("re-run only %.3f s after the first start"):format(rerun.time - first.time))
      assert.is_true(elapsed < lease + 5)
      assert.is_nil(s:job(id))
      assert.equals(1, #a:events("start", id))
      assert.equals(0, #a:events("done", id))
    end)

    it("re-runs at once the job of a worker killed mid-batch, counting the lost attempt #postgresql", function()
      local name = helper.name("killheld")
      local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_SLEEP = 60 }
      assert(a:wait_file("ready", 10), a:describe())
      local id = helper.schedule(s, name, "victim")
      local first = helper.wait_for(function() return a:events("start", id)[1] end, 10)
      assert.is_truthy(first, a:describe())
      assert.is_true(a:kill("KILL")) -- well within the default lease's first second
      assert.equals(137, a:wait(5), a:describe())
      assert.is_truthy(helper.wait_worker_gone(a))
      local b = helper.new()
      local rerun
      b:on(name, function(payload, job) rerun = { payload = payload, attempt = job.attempt } end)
      local elapsed = helper.timed(b.run, b, { drain = true })
      assert.is_truthy(rerun, "the job did not come back at once")
      assert.equals("victim", rerun.payload)
      assert.equals(2, rerun.attempt)
      assert.is_true(elapsed < 2)
      assert.is_nil(s:job(id))
    end)

    it("runs the jobs of a killed worker's batch in quarantine, alone and uncharged, before others #postgresql", function()
      local name = helper.name("killmixed")
      local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_SLEEP = 60 }
      assert(a:wait_file("ready", 10), a:describe())
      local t = helper.now()
      -- one statement: the worker claims the three in one batch
      local victims = helper.ok(s:schedule_many {
        { name, "v1", { at = t - 3 } }, { name, "v2", { at = t - 2 } }, { name, "v3", { at = t - 1 } },
      })
      assert.is_truthy(helper.wait_for(function() return a:events("start", victims[1])[1] end, 10), a:describe())
      assert.is_true(a:kill("KILL"))
      assert.equals(137, a:wait(5), a:describe())
      assert.is_truthy(helper.wait_worker_gone(a))
      -- due after the victims
      local fresh = { helper.schedule(s, name, "f1", { at = t }), helper.schedule(s, name, "f2", { at = t }) }
      local b = helper.new()
      local ran = {}
      b:on(name, function(payload, job) ran[#ran + 1] = payload .. "@" .. job.attempt end)
      assert.equals(5, b:run{ drain = true })
      -- the worker could not know which of the three crashed it: none is
      -- charged, each runs alone, first
      assert.same({ "v1@1", "v2@1", "v3@1", "f1@1", "f2@1" }, ran)
      for _, id in ipairs(victims) do assert.is_nil(s:job(id)) end
      for _, id in ipairs(fresh) do assert.is_nil(s:job(id)) end
    end)

    it("fails a job that kills its worker every time once its attempts are used up #postgresql", function()
      local name = helper.name("poison")
      local id = helper.schedule(s, name, "poison", { max_attempts = 2 })
      for attempt = 1, 2 do
        local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_SLEEP = 60 }
        local started = helper.wait_for(function() return a:events("start", id)[1] end, 10)
        assert.is_truthy(started, a:describe())
        assert.equals(attempt, started.attempt)
        assert.is_true(a:kill("KILL"))
        assert.equals(137, a:wait(5), a:describe())
        assert.is_truthy(helper.wait_worker_gone(a))
      end
      local b = helper.new()
      local ran = false
      b:on(name, function() ran = true end)
      assert.equals(0, b:run{ drain = true })
      assert.is_false(ran)
      local job = helper.ok(s:job(id))
      assert.equals("failed", job.state)
      assert.equals(2, job.attempt)
      assert.matches("attempt 2 was lost: worker .* died while running it", job.last_error)
    end)

    it("keeps a job that runs longer than the lease leased (runs exactly once)", function()
      local name = helper.name("heartbeat")
      local procs = {
        helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = 1 },
        helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = 1 },
      }
      for _, p in ipairs(procs) do assert(p:wait_file("ready", 10), p:describe()) end
      local id = helper.schedule(s, name, { sleep = 3 })
      assert.is_truthy(helper.wait_for(function() return #helper.all_results(procs, "start") > 0 end, 5),
        describe_all(procs))

      -- a third competitor, in this process, keeps trying while the job runs
      local b = helper.new{ lease = 1 }
      local stolen = 0
      b:on(name, function() stolen = stolen + 1 end)
      -- held by a row lock at first, leased after lease/4
      assert.is_truthy(helper.wait_for(function()
        return not s:job(id) or helper.leased(s, id)
      end, 2))
      local deadline = helper.now() + 6
      while #helper.all_results(procs, "done") == 0 and helper.now() < deadline do
        local job = s:job(id)
        if job then
          assert.equals("running", job.state)
        else -- it may have finished since the loop condition was checked
          assert.is_true(#helper.all_results(procs, "done") > 0, "the job disappeared while running")
        end
        assert.equals(0, b:run{ drain = true })
        helper.sleep(0.25)
      end
      assert.equals(1, #helper.all_results(procs, "done"), describe_all(procs))
      helper.sleep(1.5) -- would anyone run it again?
      assert.equals(0, stolen)
      assert.equals(1, #helper.all_results(procs, "start"), describe_all(procs))
      assert.is_nil(s:job(id))
    end)

    for _, sig in ipairs({ "TERM", "INT" }) do
      it("finishes the job in hand, releases the rest and exits 0 on SIG" .. sig, function()
        local name = helper.name("sig" .. sig:lower())
        local first = helper.schedule(s, name, { sleep = 1.5 }, { priority = 0 })
        local rest = {}
        for i = 1, 3 do rest[i] = helper.schedule(s, name, { sleep = 0 }, { priority = 1 }) end
        local p = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = 30 }
        assert.is_truthy(helper.wait_for(function() return p:events("start", first)[1] end, 10), p:describe())
        assert.is_true(p:kill(sig))
        local t = helper.now()
        assert.equals(0, p:wait(10), p:describe())
        assert.is_true(helper.now() - t < 1.5 + 3, "exit took " .. (helper.now() - t))
        assert.equals(1, #p:events("done", first), p:describe())
        assert.is_nil(s:job(first))
        for _, id in ipairs(rest) do
          assert.equals(0, #p:events("start", id), p:describe())
          assert.equals("scheduled", helper.ok(s:job(id)).state)
        end
        assert.equals("true", (p:file("returned") or ""):match("^(%S+)"))
      end)
    end

    it("returns true from run() after stop() in a listener", function()
      local name = helper.name("stop-proc")
      local p = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_STOP_AFTER = 1 }
      local id = helper.schedule(s, name, nil)
      assert.equals(0, p:wait(10), p:describe())
      assert.equals(1, #p:events("done", id))
      assert.is_nil(s:job(id))
    end)

    it("restores the previous signal handlers when run returns", function()
      local name = helper.name("restore")
      local p = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "restore", WORKER_SECONDS = 0.3 }
      assert.is_truthy(p:wait_file("after", 10), p:describe())
      assert.equals("true", (p:file("returned") or ""):match("^(%S+)"))
      assert.is_true(p:kill("TERM"))
      assert.equals(128 + 15, p:wait(5), p:describe())
      assert.is_nil(p:file("survived"))
    end)

    it("migrates a fresh database safely when several workers start at once", function()
      local database, count_all
      if helper.SQLITE then
        -- a file that does not exist yet, in a directory of its own
        local path = helper.tmpdir() .. "/fresh.db"
        database = "sqlite:" .. path
        count_all = function() return helper.sql_int("SELECT count(*) FROM scheduler.jobs", { path = path }) end
      else
        local dbname
        dbname, database = helper.new_database("lua_scheduler_mig", finally)
        count_all = function() return helper.psql_int("SELECT count(*) FROM scheduler.jobs", { dbname = dbname }) end
      end
      local name = helper.name("migrate")
      local procs = {}
      for i = 1, 4 do
        procs[i] = helper.spawn{
          WORKER_NAMES = name, WORKER_MODE = "drain", WORKER_SCHEDULE = 5,
          WORKER_DATABASE = database,
        }
      end
      local drained = 0
      for _, p in ipairs(procs) do
        assert.equals(0, p:wait(30), p:describe())
        drained = drained + assert(tonumber(p:file("drained")), p:describe())
      end
      local starts = helper.all_results(procs, "start")
      assert.equals(20, #starts, describe_all(procs))
      local ids = {}
      for id in pairs(helper.tally(starts, "id")) do ids[#ids + 1] = id end
      assert.equals(20, #ids, "some job ran twice")
      assert.equals(20, drained)
      assert.equals(0, count_all())
    end)
  end)
end)
