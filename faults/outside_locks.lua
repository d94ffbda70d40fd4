-- Scenario outside_locks (issue 14, item 2): nothing outside the scheduler
-- changes a job's fate.  While `lua-scheduler run --workers 2` runs 3,000
-- jobs due over 6 s, all with max_attempts = 1 (one attempt counted would
-- fail a job that never ran), another client keeps locking the jobs about
-- to come due, 0.2 s at a time, in four ways, each rolled back: SELECT ...
-- FOR UPDATE, SELECT ... FOR SHARE, an UPDATE, and an insert into an
-- application table with a foreign key to scheduler.jobs (which locks the
-- referenced rows FOR KEY SHARE).  Counted by the independent record: every
-- job runs exactly once, at attempt 1, none fails, and no job waits much
-- longer than a lock is held.
local lib = require "faults.lib"
local scheduler = require "scheduler"

local HOLD = 0.2

local ATTACKS = {
  "SELECT count(*) FROM (SELECT id FROM scheduler.jobs WHERE %s FOR UPDATE) x",
  "SELECT count(*) FROM (SELECT id FROM scheduler.jobs WHERE %s FOR SHARE) x",
  "UPDATE scheduler.jobs SET priority = priority WHERE id IN (SELECT id FROM scheduler.jobs WHERE %s)",
  "INSERT INTO faults_app (job_id) SELECT id FROM scheduler.jobs WHERE %s",
}

return {
  title = "outside locks: another client locks and rolls back the jobs coming due",
  recovery = "-",
  run = function(ctx, r)
    local n, spread = ctx.size(3000), 6
    lib.clear_jobs()
    lib.psql("DROP TABLE IF EXISTS faults_app;"
      .. " CREATE TABLE faults_app (job_id bigint REFERENCES scheduler.jobs (id) ON DELETE CASCADE);"
      .. " CREATE INDEX ON faults_app (job_id)")
    lib.on_cleanup(function() lib.psql("DROP TABLE IF EXISTS faults_app", { may_fail = true }) end)
    local records = lib.tmpdir("outside-records")
    local rec = lib.records(records)
    local sup = lib.start_run("outside", 2, records)
    r:check(sup:wait_log("started: listeners", 2, 20), "the 2 workers started", sup)
    local s <close> = scheduler.new { log = false }
    local t0 = lib.now()
    local ids = {}
    for from = 1, n, 1000 do
      local list = {}
      for i = from, math.min(n, from + 999) do
        list[#list + 1] = { lib.JOB, { seq = i }, { at = t0 + 1 + math.random() * spread, max_attempts = 1 } }
      end
      local got = assert(s:schedule_many(list))
      table.move(got, 1, #got, #ids + 1, ids)
    end
    r.scheduled = #ids
    -- the attacker: rounds of the four attacks on the next jobs to come due
    local script = {}
    -- (each round locks a quarter of the jobs, id mod 4, so that a job is
    -- not locked again by the next round: what a job waits for is one lock)
    local function due(k)
      return ("name = '%s' AND state = 'scheduled' AND run_at < now() + interval '%g s'"
        .. " AND id %% 4 = %d ORDER BY run_at LIMIT 50"):format(lib.JOB, HOLD * 1.5, k % 4)
    end
    local rounds = math.floor((spread + 1) / HOLD)
    for k = 1, rounds do
      script[#script + 1] = ("BEGIN; %s; SELECT pg_sleep(%g); ROLLBACK;")
        :format(ATTACKS[(k - 1) % #ATTACKS + 1]:format(due(k)), HOLD)
    end
    local sqlfile = lib.tmpdir("outside-sql") .. "/attack.sql"
    lib.write_file(sqlfile, table.concat(script, "\n") .. "\n")
    -- (an insert that references a job a worker has just deleted fails, as
    -- it would for the application: the attacker goes on)
    local attacker = lib.start("attacker", { lib.PGBIN .. "/psql", "-X", "-q", "-f", sqlfile })
    r:check(attacker:wait(spread + 30) == 0, ("the attacker ran %d rounds of locks, rolled back"):format(rounds),
      attacker)
    rec:wait_all(ids, 60)
    rec:read()
    local failed = assert(s:jobs { state = "failed", name = lib.JOB })
    r:check(#failed == 0, ("no job failed (%d failed)"):format(#failed))
    local charged, late = 0, {}
    for _, run in ipairs(rec.runs) do
      if run.attempt ~= 1 then charged = charged + 1 end
      late[#late + 1] = run.start - run.run_at
    end
    r:check(charged == 0, ("every run was attempt 1 (%d were not)"):format(charged))
    r.lateness = lib.spread(late)
    -- a worker that finds due jobs held looks again after 5 ms, doubling
    -- up to 0.25 s
    r:check(r.lateness.max < (HOLD + 0.25 + 0.5) * 1000,
      ("no job waited much longer than a lock is held (max %.0f ms, locks %.0f ms + the re-look)")
        :format(r.lateness.max, HOLD * 1000))
    r:check(sup:stop() == 0, "the supervisor stopped gracefully (exit 0)", sup)
    local lost, dups = rec:check(ids)
    r:count(ids, rec, lost, dups, function() return nil end)
  end,
}
