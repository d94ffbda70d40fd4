-- Crashes are charged to the job that caused them, never to its neighbours
-- or to other clients' locks (issue 14, items 1-3).  Worker processes are
-- spec/support/worker.lua (helper.spawn); what ran is counted by their
-- results files, an independent record, never by the scheduler's tables.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"

--- Drain workers for `name`, one after another while they die with exit
-- code 3 (a job that crashes its worker; at most 4), with the extra
-- environment `env`; returns the attempts each run started with.
local function run_until_done(name, env)
  local procs = {}
  for _ = 1, 4 do
    local vars = { WORKER_NAMES = name, WORKER_MODE = "drain", WORKER_LEASE = 1 }
    for k, v in pairs(env) do vars[k] = v end
    local p = helper.spawn(vars)
    procs[#procs + 1] = p
    local code = p:wait(30)
    if code == 0 then break end
    assert.equals(3, code, p:describe())
    assert.is_truthy(helper.wait_worker_gone(p))
    helper.sleep(1.3)
  end
  local attempts = {}
  for _, r in ipairs(helper.all_results(procs, "start")) do attempts[#attempts + 1] = r.attempt end
  return attempts
end

describe("crashes", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  it("a job that ends its worker is charged alone; its batch loses nothing and runs in quarantine", function()
    local name = helper.name("poison")
    local lease = 1
    local t = helper.now()
    -- one statement: the first worker claims them all in one batch.  The
    -- innocents may not lose a single attempt: one charged would fail it.
    local list = {}
    for i = 1, 30 do
      local poison = i == 10
      list[i] = { name, poison and { exit = 3 } or { n = i },
        { at = t - 60 + i, max_attempts = poison and 3 or 1 } }
    end
    local ids = helper.ok(s:schedule_many(list))
    local poison = ids[10]
    local procs = {}
    for round = 1, 8 do
      local p = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "drain", WORKER_LEASE = lease }
      procs[#procs + 1] = p
      local code = p:wait(30)
      assert.is_truthy(code, p:describe())
      if code == 0 and helper.count_jobs(name) <= 1 then break end
      assert.equals(3, code, p:describe()) -- the poison ended it
      assert.is_truthy(helper.wait_worker_gone(p))
      -- a crashed lease comes back when it expires (no supervisor here)
      helper.sleep(lease + 0.3)
    end
    local runs = helper.all_results(procs, "start")
    local starts, attempts = {}, {}
    for _, r in ipairs(runs) do
      starts[r.id] = (starts[r.id] or 0) + 1
      attempts[r.id] = attempts[r.id] or {}
      table.insert(attempts[r.id], r.attempt)
    end
    local done = helper.tally(helper.all_results(procs, "done"), "id")
    for i, id in ipairs(ids) do
      if id ~= poison then
        assert.is_nil(s:job(id), "innocent job " .. i .. " is left over")
        assert.is_true((done[id] or 0) >= 1, "innocent job " .. i .. " never finished")
        for _, a in ipairs(attempts[id]) do
          assert.equals(1, a, "innocent job " .. i .. " was charged an attempt")
        end
      end
    end
    local job = helper.ok(s:job(poison))
    assert.equals("failed", job.state)
    assert.equals(3, job.attempt)
    -- three crashes charged in quarantine, after the one in the batch that
    -- could not know which of its jobs crashed it
    assert.equals(4, starts[poison], helper.describe_all(procs))
    assert.same({ 1, 1, 2, 3 }, attempts[poison])
    assert.equals(1, helper.sql_int("SELECT count(*) FROM scheduler.jobs WHERE state = 'failed' AND name = "
      .. helper.literal(name)))
  end)

  it("a job alone that ends its worker is charged each time until it fails", function()
    local name = helper.name("alone")
    local id = helper.schedule(s, name, { exit = 3 }, { max_attempts = 2 })
    assert.same({ 1, 2 }, run_until_done(name, {}))
    local job = helper.ok(s:job(id))
    assert.equals("failed", job.state)
    assert.equals(2, job.attempt)
    assert.matches("died", job.last_error, 1, true)
  end)

  it("a job that ends its worker is charged against its listener's max_attempts when it sets none", function()
    local name = helper.name("listener-max")
    local id = helper.schedule(s, name, { exit = 3 }) -- no max_attempts of its own
    assert.same({ 1, 2 }, run_until_done(name, { WORKER_LISTENER_MAX = 2 })) -- not 25 (the default)
    local job = helper.ok(s:job(id))
    assert.equals("failed", job.state)
    assert.equals(2, job.attempt)
  end)

  describe("outside transactions #postgresql", function()
    -- Another client locks the rows, or changes them and rolls back, while
    -- a worker looks for due jobs.  With max_attempts = 1 a single attempt
    -- counted would fail a job that never ran.
    local cases = {
      { "SELECT ... FOR UPDATE", "SELECT id FROM scheduler.jobs WHERE name = %s FOR UPDATE" },
      { "SELECT ... FOR SHARE", "SELECT id FROM scheduler.jobs WHERE name = %s FOR SHARE" },
      { "an UPDATE that rolls back", "UPDATE scheduler.jobs SET priority = priority WHERE name = %s" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " never counts an attempt and delays no longer than the lock", function()
        local name = helper.name("outside")
        local ids = {}
        for i = 1, 5 do ids[i] = helper.schedule(s, name, i, { max_attempts = 1 }) end
        local hold = 1.5
        local sql = ("BEGIN; %s; SELECT pg_sleep(%s); ROLLBACK;"):format(case[2]:format(helper.literal(name)), hold)
        local sqlfile = os.tmpname()
        helper.write_file(sqlfile, sql)
        local t0 = helper.now()
        helper.sh("psql -XAtq -v ON_ERROR_STOP=1 -f " .. helper.shquote(sqlfile) .. " >/dev/null 2>&1 &")
        -- the locker holds the rows before the worker looks
        assert.is_truthy(helper.wait_for(function()
          return helper.psql_int("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%'"
            .. " AND pid <> pg_backend_pid()") > 0
        end, 5))
        local ran = {}
        s:on(name, function(payload, job) ran[#ran + 1] = { payload = payload, attempt = job.attempt, t = helper.now() } end)
        -- a worker that looks again and again while the lock is held, then after
        while #ran < 5 and helper.now() - t0 < hold + 5 do
          assert.is_true(s:run{ seconds = 0.2 })
        end
        os.remove(sqlfile)
        assert.equals(5, #ran)
        for _, r in ipairs(ran) do
          assert.equals(1, r.attempt)
          assert.is_true(r.t - t0 < hold + 2, ("started %.2f s after the lock was taken"):format(r.t - t0))
        end
        for _, id in ipairs(ids) do assert.is_nil(s:job(id)) end
      end)
    end
  end)
end)

describe("cancel against a worker that holds the job", function()
  local s
  before_each(function() s = helper.new() end)
  -- cancel()'s answer, which must not be an error
  local function cancel(id)
    local ok, err = s:cancel(id)
    assert(err == nil, err)
    return ok
  end
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("returns true for a job not started yet, which then never runs; false for one that started", function()
    local name = helper.name("cancelrace")
    local gate = helper.tmpdir() .. "/gate"
    assert(os.execute("mkfifo " .. helper.shquote(gate)))
    local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_FIFO = gate }
    assert(a:wait_file("ready", 10), a:describe())
    for round = 1, 3 do
      local t = helper.now()
      -- one statement: the worker claims the three in one batch, and the
      -- first keeps it busy while the others wait in it: it blocks on a
      -- FIFO until the cancel of the second is asked (neither the worker's
      -- speed nor this process's decides the race: a timed job did, under
      -- ASan on a loaded machine)
      local ids = helper.ok(s:schedule_many {
        { name, { fifo = true, round = round }, { at = t - 3 } },
        { name, { round = round, n = 2 }, { at = t - 2 } },
        { name, { round = round, n = 3 }, { at = t - 1 } },
      })
      assert.is_truthy(helper.wait_for(function() return a:events("start", ids[1])[1] end, 10), a:describe())
      -- the next one waits in the worker's batch: cancelled, never runs
      local c = cli.start { "cancel", tostring(ids[2]) }
      assert.is_truthy(helper.wait_for(function()
        return helper.sql_int("SELECT count(*) FROM scheduler.cancels WHERE job_id = " .. ids[2]) == 1
          or c:exit_code()
      end, 10), c:describe())
      assert.is_true(helper.open_fifo(gate), a:describe())
      assert.is_truthy(c:wait(10), c:describe())
      assert.equals(0, c:exit_code(), c:describe())
      assert.equals(("cancelled job %d\n"):format(ids[2]), c:out())
      -- the job in hand has started: not cancelled
      assert.is_false(cancel(ids[1]))
      assert.is_truthy(helper.wait_for(function() return a:events("done", ids[3])[1] end, 10), a:describe())
      assert.equals(0, #a:events("start", ids[2]), "round " .. round .. ": the cancelled job ran")
      assert.equals(1, #a:events("done", ids[1]))
      assert.is_nil(s:job(ids[2]))
      assert.is_false(cancel(ids[3])) -- ran: gone
    end
    assert.equals(0, helper.sql_int("SELECT count(*) FROM scheduler.cancels"))
  end)
end)

describe("a stale write", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  it("of a worker frozen past its leases leaves the claim that took its job alone", function()
    local name = helper.name("frozen")
    -- each worker blocks on a FIFO of its own, opened by this test with a
    -- bound (helper.open_fifo): a worker that never comes fails the test
    local gate_a, gate_b = helper.tmpdir() .. "/gate-a", helper.tmpdir() .. "/gate-b"
    assert(os.execute("mkfifo " .. helper.shquote(gate_a) .. " " .. helper.shquote(gate_b)))
    local t = helper.now()
    -- one batch: the first blocks in C (opening the FIFO), the others wait
    local ids = helper.ok(s:schedule_many {
      { name, { fifo = true }, { at = t - 3 } }, { name, 2, { at = t - 2 } }, { name, 3, { at = t - 1 } },
    })
    local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = 1, WORKER_FIFO = gate_a }
    assert.is_truthy(helper.wait_for(function() return a:events("start", ids[1])[1] end, 10), a:describe())
    helper.sleep(0.5) -- on PostgreSQL the batch is settled into leases after a quarter of the lease
    assert.is_true(a:kill("STOP")) -- a pause (GC, VM, debugger): its leases end unrenewed
    -- B takes the job once the lease is over (SQLite: the batch's leases
    -- come back uncharged, so B's claim has the attempt A's had), and
    -- blocks on its own FIFO
    local b = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = 30, WORKER_FIFO = gate_b }
    local rerun = helper.wait_for(function() return b:events("start", ids[1])[1] end, 10)
    assert.is_truthy(rerun, b:describe())
    assert.is_true(a:kill("CONT"))
    -- A's listener returns and A writes its outcome
    assert.is_true(helper.open_fifo(gate_a), a:describe())
    assert.is_truthy(helper.wait_for(function() return a:events("done", ids[1])[1] end, 10), a:describe())
    -- (on PostgreSQL B holds it in its claim transaction for its first
    -- second, then leased: look once it is leased)
    helper.sleep(math.max(0.5, rerun.time + 1.5 - helper.now()))
    local job = helper.ok(s:job(ids[1]))
    assert.equals("running", job.state, "A's stale outcome touched B's claim")
    local rows = helper.ok(s:jobs { name = name, state = "running" })
    assert.equals(1, #rows)
    assert.matches(":" .. b:pid(), rows[1].locked_by, 1, true)
    -- B's own outcome ends it
    assert.is_true(helper.open_fifo(gate_b), b:describe())
    assert.is_truthy(helper.wait_for(function() return b:events("done", ids[1])[1] end, 15), b:describe())
    assert.is_truthy(helper.wait_for(function() return s:job(ids[1]) == nil end, 5))
  end)
end)
