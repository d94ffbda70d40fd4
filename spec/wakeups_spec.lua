-- Wake-ups of a sleeping worker process (issue 14, item 5): a recurring
-- schedule declared or changed by another process, a schedule_many larger
-- than one statement, and (PostgreSQL) a session that holds the advisory
-- lock schedule() tries, SLEEP_LOCK in csrc/store_pg_wake.c.  The worker is
-- spec/support/worker.lua; this busted process is the other process.
local helper = require "spec.helper"

-- SLEEP_LOCK of csrc/store_pg_internal.h
local SLEEP_LOCK = "1935895653, 0"

describe("a sleeping worker", function()
  local s, name, p
  before_each(function()
    s = helper.new()
    name = helper.name("wake")
  end)
  after_each(helper.cleanup)

  local function start_idle_worker(env)
    env = env or {}
    env.WORKER_NAMES, env.WORKER_MODE = name, "run"
    p = helper.spawn(env)
    assert(p:wait_file("ready", 10), p:describe())
    helper.sleep(0.7) -- let it connect, LISTEN and go to sleep
    assert.is_true(p:alive(), p:describe())
  end

  local function wait_start(id, timeout)
    return helper.wait_for(function() return p:events("start", id)[1] end, timeout or 5)
  end

  -- the next whole second at least 2 s from now, and an expression that
  -- fires then (and every minute after)
  local function slot_soon()
    local slot = math.floor(helper.now()) + 3
    return slot, ("%d * * * * *"):format(slot % 60)
  end

  describe("wakes for a recurring schedule declared by another process", function()
    -- Before, it noticed one only at its 15 s fallback check, or, if it knew
    -- of another schedule of its names, never before that one's slot.
    local function check_first_run(id, slot, declared)
      local started = helper.wait_for(function() return p:events("start")[1] end, 14)
      assert.is_truthy(started, ("no job %.1f s after the declaration (its slot was %.1f s after it)\n%s")
        :format(helper.now() - declared, slot - declared, p:describe()))
      assert.is_true(started.time >= slot - 0.01, ("ran %.3f s before its slot"):format(slot - started.time))
      assert.is_true(started.time - slot < 1.0, ("ran %.3f s after its slot"):format(started.time - slot))
    end

    it("new, with no other schedule of its names", function()
      start_idle_worker()
      local id = helper.name("cron")
      local slot, expr = slot_soon()
      local declared = helper.now()
      assert.is_true(helper.ok(s:cron(id, expr, name)))
      check_first_run(id, slot, declared)
      s:uncron(id)
    end)

    it("new, while it knows of a schedule due next year", function()
      local far = helper.name("far")
      start_idle_worker { WORKER_CRON = far .. " 0 0 1 1 *" }
      local id = helper.name("cron")
      local slot, expr = slot_soon()
      local declared = helper.now()
      assert.is_true(helper.ok(s:cron(id, expr, name)))
      check_first_run(id, slot, declared)
      s:uncron(id)
      s:uncron(far)
    end)

    it("changed to an earlier slot", function()
      local id = helper.name("cron")
      start_idle_worker { WORKER_CRON = id .. " 0 0 1 1 *" }
      local slot, expr = slot_soon()
      local declared = helper.now()
      assert.is_true(helper.ok(s:cron(id, expr, name)))
      check_first_run(id, slot, declared)
      s:uncron(id)
    end)
  end)

  it("wakes for the due job of a schedule_many larger than one statement", function()
    finally(function() helper.sql("DELETE FROM scheduler.jobs WHERE name = " .. helper.literal(name)) end)
    start_idle_worker()
    local list, later = {}, helper.now() + 3600
    for i = 1, 10001 do list[i] = { name, { n = i }, later } end
    list[10001] = { name, { n = 10001 } } -- due at once, in the last statement
    local t = helper.now()
    local ids = helper.ok(s:schedule_many(list))
    local returned = helper.now()
    local started = wait_start(ids[10001])
    assert.is_truthy(started, p:describe())
    -- from its return: the insert's own time is not the wake-up's (it took
    -- 3.6 s once under ASan on a loaded machine); the fallback look is 15 s
    assert.is_true(started.time - returned < 2.0, ("started %.3f s after schedule_many returned (%.3f s after the call)")
      :format(started.time - returned, started.time - t))
    assert.are.equal(1, #p:events("start"))
  end)

  it("is not held up for long by a session holding the migration lock #postgresql", function()
    -- before, connecting to a database to migrate waited for that lock as
    -- long as its holder liked, deaf to signals
    local dbname, db = helper.new_database("miglock", finally)
    local app = helper.name("holder")
    finally(function()
      pcall(helper.psql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
        .. helper.literal(app))
    end)
    helper.sh(("PGAPPNAME=%s psql -XAtq -d %s -c %s >/dev/null 2>&1 &"):format(helper.shquote(app),
      helper.shquote(dbname), helper.shquote("BEGIN; SELECT pg_advisory_xact_lock(x'7361726961626c65'::bigint);"
        .. " SELECT pg_sleep(60); COMMIT;")))
    assert.is_truthy(helper.wait_for(function()
      return helper.psql_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = " .. helper.literal(app)
        .. " AND wait_event = 'PgSleep'") == 1
    end, 5))
    local m = helper.new { database = db }
    local t = helper.now()
    local id, err = m:schedule(name)
    local took = helper.now() - t
    helper.runtime_error(id, err)
    assert.is_truthy(err:find("lock timeout", 1, true), err)
    assert.is_true(took >= 5 and took < 20, ("gave up after %.1f s"):format(took))
    helper.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
      .. helper.literal(app))
    helper.ok(m:schedule(name))
  end)

  describe("is not held up by a session holding the lock schedule() tries #postgresql", function()
    -- psql in the background: take SLEEP_LOCK exclusively in a transaction
    -- (as our own INSERT does, inside an application's transaction), do
    -- `body`, stay open for `seconds`, commit; prints the clock right before
    -- its COMMIT to DIR/out.  Its backend is ended with the test.
    local function hold(finally, seconds, body)
      local dir, app = helper.tmpdir(), helper.name("holder")
      finally(function()
        pcall(helper.psql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
          .. helper.literal(app))
      end)
      local sql = ("BEGIN; SELECT pg_advisory_xact_lock(%s); %s SELECT pg_sleep(%g);"
        .. " SELECT 'committing ' || extract(epoch FROM clock_timestamp()); COMMIT;"):format(SLEEP_LOCK, body or "",
          seconds)
      helper.sh(("PGAPPNAME=%s psql -XAtq -v ON_ERROR_STOP=1 -c %s >%s 2>&1 &"):format(helper.shquote(app),
        helper.shquote(sql), helper.shquote(dir .. "/out")))
      local held = helper.wait_for(function()
        return helper.psql_int("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
          .. " AND mode = 'ExclusiveLock' AND classid = 1935895653 AND objid = 0") == 1
      end, 5)
      assert.is_truthy(held, "psql did not take the lock: " .. tostring(helper.read_file(dir .. "/out")))
      return dir
    end

    it("a job due now or in 1 s runs on time while it holds it", function()
      hold(finally, 20) -- longer than the test: before, the worker slept on the lock until its commit
      start_idle_worker()
      local t = helper.now()
      local now_id = helper.schedule(s, name, "now")
      local soon_id = helper.schedule(s, name, "soon", { delay = 1 })
      local started = wait_start(now_id)
      assert.is_truthy(started, p:describe())
      assert.is_true(started.time - t < 1.0, ("started %.3f s after it was scheduled"):format(started.time - t))
      local soon = wait_start(soon_id)
      assert.is_truthy(soon, p:describe())
      local job_run_at = t + 1
      assert.is_true(soon.time - job_run_at < 1.0, ("started %.3f s late"):format(soon.time - job_run_at))
    end)

    it("a job it inserts without notification runs soon after its commit", function()
      -- the holder's own job sends no NOTIFY (our INSERT does not when it
      -- holds the lock), so nothing but the worker's own looks can find it
      local dir = hold(finally, 2, ("INSERT INTO scheduler.jobs (name, payload) VALUES (%s, '\"silent\"')"
        .. " RETURNING id, set_config('scheduler.notified', 'on', true);"):format(helper.literal(name)))
      start_idle_worker()
      local started = helper.wait_for(function() return p:events("start")[1] end, 10)
      assert.is_truthy(started, p:describe())
      local out = helper.read_file(dir .. "/out") or ""
      local committing = assert(tonumber(out:match("committing (%S+)")), out)
      assert.is_true(started.time - committing < 1.0,
        ("started %.3f s after the holder committed (the fallback check is at 15 s)"):format(started.time - committing))
    end)
  end)
end)
