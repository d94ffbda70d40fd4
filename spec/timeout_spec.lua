-- Listener time limits: on(name, fn, { timeout = seconds }) and the
-- instance's `timeout` option.  Lua code that runs too long is stopped by a
-- count hook and the job fails with "timeout: ..." like any listener error
-- (retried per backoff, failed after max_attempts).  A listener blocked in C
-- cannot be stopped: its worker stops renewing the lease, so the job runs
-- again elsewhere once the lease expires (worker processes, #slow).
local helper = require "spec.helper"

local function spin(seconds)
  local t = helper.now() + seconds
  while helper.now() < t do end
end

describe("listener timeouts", function()
  local s
  before_each(function()
    s = helper.new{ backoff = function() return 30 end }
  end)
  after_each(helper.cleanup)

  describe("stop Lua code that runs too long", function()
    it("an infinite loop: the job records the timeout and is retried after the backoff", function()
      local name = helper.name("loop")
      local id = helper.schedule(s, name, nil)
      s:on(name, function() while true do end end, { timeout = 0.2 })
      local took, n = helper.timed(s.run, s, { drain = true })
      assert.equals(1, n)
      assert.is_true(took < 0.2 + helper.SLACK, ("took %.3f s"):format(took))
      local job = helper.ok(s:job(id))
      assert.equals("scheduled", job.state)
      assert.equals(1, job.attempt)
      assert.is_truthy(job.last_error:find("^timeout: listener ran longer than 0.2s"), job.last_error)
      assert.is_true(job.run_at > helper.now() + 20, "not retried after the backoff")
    end)

    it("and fails it when its attempts are used up", function()
      local s0 = helper.new{ backoff = function() return 0 end }
      local name = helper.name("loop-fail")
      local id = helper.schedule(s0, name, nil, { max_attempts = 2 })
      local calls = 0
      s0:on(name, function() calls = calls + 1; while true do end end, { timeout = 0.1 })
      assert.equals(2, helper.drain_until(s0, function() return calls >= 2 end))
      local job = helper.ok(s0:job(id))
      assert.equals("failed", job.state)
      assert.equals(2, job.attempt)
      assert.is_truthy(job.last_error:find("timeout", 1, true), job.last_error)
    end)

    it("a listener that catches the timeout error and carries on", function()
      local name = helper.name("pcall-loop")
      local id = helper.schedule(s, name, nil)
      local caught = 0
      s:on(name, function()
        while true do
          local ok = pcall(function() while true do end end)
          if not ok then caught = caught + 1 end
        end
      end, { timeout = 0.2 })
      local took = helper.timed(s.run, s, { drain = true })
      assert.is_true(took < 0.2 + helper.SLACK, ("took %.3f s"):format(took))
      assert.is_truthy(helper.ok(s:job(id)).last_error:find("timeout", 1, true))
    end)

    it("a loop inside a coroutine the listener created", function()
      local name = helper.name("coroutine-loop")
      local id = helper.schedule(s, name, nil)
      s:on(name, function()
        local co = coroutine.wrap(function() while true do end end)
        co()
      end, { timeout = 0.2 })
      local took = helper.timed(s.run, s, { drain = true })
      assert.is_true(took < 0.2 + helper.SLACK, ("took %.3f s"):format(took))
      assert.is_truthy(helper.ok(s:job(id)).last_error:find("timeout", 1, true))
    end)
  end)

  it("let a listener that finishes within its limit succeed", function()
    local name = helper.name("within")
    local id = helper.schedule(s, name, nil)
    s:on(name, function() spin(0.1) end, { timeout = 5 })
    assert.equals(1, s:run{ drain = true })
    assert.is_nil(s:job(id))
  end)

  it("apply the instance's default, which on()'s option overrides", function()
    local s1 = helper.new{ timeout = 0.1, backoff = function() return 30 end }
    local short, long = helper.name("default-timeout"), helper.name("own-timeout")
    local id_short = helper.schedule(s1, short, nil)
    local id_long = helper.schedule(s1, long, nil)
    s1:on(short, function() spin(0.4) end)
    s1:on(long, function() spin(0.4) end, { timeout = 5 })
    assert.equals(2, s1:run{ drain = true })
    assert.is_truthy(helper.ok(s1:job(id_short)).last_error:find("longer than 0.1s", 1, true))
    assert.is_nil(s1:job(id_long))
  end)

  it("of listeners registered before configure() are kept", function()
    local scheduler = require "scheduler"
    scheduler.configure{ database = helper.DATABASE, log = false, backoff = function() return 30 end }
    local name = helper.name("configure")
    scheduler.on(name, function() while true do end end, { timeout = 0.1 })
    scheduler.configure{ database = helper.DATABASE, log = false, backoff = function() return 30 end }
    local id = helper.ok(scheduler.schedule(name, nil))
    assert.equals(1, scheduler.run{ drain = true })
    assert.is_truthy(helper.ok(scheduler.job(id)).last_error:find("timeout", 1, true))
    scheduler.off(name)
  end)

  it("cost nothing for listeners without one: no hook while they run", function()
    local name = helper.name("no-hook")
    helper.schedule(s, name, 1)
    helper.schedule(s, name, 2)
    local seen = {}
    s:on(name, function(n) seen[n] = debug.gethook() or false end)
    assert.equals(2, s:run{ drain = true })
    assert.same({ false, false }, seen)
    s:on(name, function(n) seen[n] = debug.gethook() or false end, { timeout = 5 })
    helper.schedule(s, name, 1)
    assert.equals(1, s:run{ drain = true })
    assert.equals("external hook", seen[1])
  end)

  describe("leave no hook behind", function()
    local saved
    before_each(function()
      saved = 0
      debug.sethook(function() saved = saved + 1 end, "", 1000000)
    end)
    after_each(function() debug.sethook() end)

    local function check_restored(hook)
      local f, mask, count = debug.gethook()
      assert.equals(hook, f)
      assert.equals("", mask)
      assert.equals(1000000, count)
    end

    it("when the listener returns, raises or times out (the previous hook is back)", function()
      local hook = debug.gethook()
      for _, body in ipairs {
        function() end,
        function() error("boom") end,
        function() while true do end end,
      } do
        local name = helper.name("restore")
        helper.schedule(s, name, nil)
        s:on(name, body, { timeout = 0.1 })
        assert.equals(1, s:run{ drain = true })
        check_restored(hook)
      end
    end)

    it("when the listener yields (run() called from a coroutine)", function()
      local hook = debug.gethook()
      local name = helper.name("yield")
      local id = helper.schedule(s, name, nil)
      s:on(name, function() coroutine.yield() end, { timeout = 5 })
      local co = coroutine.create(function() return s:run{ drain = true } end)
      local ok, n = coroutine.resume(co)
      assert.is_true(ok, tostring(n))
      assert.equals(1, n)
      assert.is_truthy(helper.ok(s:job(id)).last_error:find("yield", 1, true))
      check_restored(hook)
    end)
  end)

  it("do not stop a coroutine that outlives the listener", function()
    local name = helper.name("outlives")
    helper.schedule(s, name, nil)
    local co
    s:on(name, function()
      co = coroutine.create(function()
        while true do coroutine.yield() end
      end)
      coroutine.resume(co)
    end, { timeout = 0.1 })
    assert.equals(1, s:run{ drain = true })
    helper.sleep(0.2) -- past the listener's deadline
    for _ = 1, 10000 do assert.is_true((coroutine.resume(co))) end
    assert.is_nil(debug.gethook(co))
  end)

  describe("must be positive numbers of seconds", function()
    local fn = function() end
    for _, bad in ipairs { 0, -1, 0 / 0, math.huge, "5", true, {} } do
      it(("on() raises for %s"):format(tostring(bad)), function()
        helper.raises(function() s:on(helper.name("bad"), fn, { timeout = bad }) end, "timeout")
      end)
      it(("new() raises for %s"):format(tostring(bad)), function()
        helper.raises(function() helper.new{ timeout = bad } end, "timeout")
      end)
    end
  end)

  describe("of a listener blocked in C #slow", function()
    it("let the lease expire so another worker runs the job; the jobs before it are recorded", function()
      local name = helper.name("blocked")
      local lease, limit = 2, 1
      local fifo = helper.tmpdir() .. "/block"
      assert(select(2, helper.sh("mkfifo " .. helper.shquote(fifo))), "mkfifo failed")
      local before = helper.schedule(s, name, { n = 1 }, helper.now() - 1)
      local id = helper.schedule(s, name, { fifo = fifo })
      local a = helper.spawn{ WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = lease,
        WORKER_TIMEOUT = limit }
      local started = helper.wait_for(function() return a:events("start", id)[1] end, 15)
      assert.is_truthy(started, a:describe())
      -- the job run before the blocked one in the same batch is recorded
      -- although the batch has not ended
      assert.is_truthy(helper.wait_for(function() return s:job(before) == nil end, limit + 5),
        "the job run before the blocked one is still held\n" .. a:describe())

      local b = helper.new{ lease = lease }
      local rerun
      b:on(name, function(_, job) rerun = { id = job.id, attempt = job.attempt, time = helper.now() } end)
      local deadline = helper.now() + limit + 1 + lease + 10
      while not rerun and helper.now() < deadline do b:run{ seconds = 0.5 } end
      assert.is_truthy(rerun, "the blocked job was not run again\n" .. a:describe())
      assert.equals(id, rerun.id)
      assert.equals(2, rerun.attempt)
      assert.is_true(rerun.time - started.time >= limit, "run again before the time limit")
      assert.is_nil(a:log():find("failed on attempt", 1, true), "the blocked call returned early\n" .. a:describe())
      assert.is_nil(b:job(id))

      -- the blocked call returns later (at least once: the job ran twice);
      -- the listener goes on (it returns, or the hook stops it), and its late
      -- outcome is fenced: it changes nothing
      helper.sh("timeout 5 sh -c " .. helper.shquote("echo > " .. helper.shquote(fifo)))
      assert.is_truthy(helper.wait_for(function()
        return a:events("done", id)[1] or a:log():find("timeout: listener ran longer than 1s", 1, true)
      end, 10), a:describe())
      helper.sleep(0.3)
      assert.is_truthy(a:log():find("past its timeout", 1, true), a:describe())
      assert.equals(0, helper.count_jobs(name))
      assert.is_true(a:alive(), a:describe())
      a:kill("TERM")
      assert.equals(0, a:wait(10), a:describe())
    end)
  end)
end)
