-- on()/off() and what listeners see; listener failures are data: errors are
-- recorded, retried after backoff(attempt) and end in state "failed".
local helper = require "spec.helper"

describe("listeners", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  describe("receive (payload, job)", function()
    it("with id, name, attempt, max_attempts, run_at, key and priority", function()
      local name, key = helper.name("fields"), helper.name("key")
      local t = helper.now() - 5.25
      local id = helper.schedule(s, name, { hello = "world" }, { at = t, key = key, priority = 4 })
      local got
      s:on(name, function(payload, job) got = { payload = payload, job = job } end)
      assert.equals(1, s:run{ drain = true })
      assert.same({ hello = "world" }, got.payload)
      local job = got.job
      assert.equals("table", type(job))
      assert.equals(id, job.id)
      assert.equals("integer", math.type(job.id))
      assert.equals(name, job.name)
      assert.equals(1, job.attempt)
      assert.equals("integer", math.type(job.attempt))
      assert.equals(25, job.max_attempts)
      assert.equals("float", math.type(job.run_at))
      assert.is_true(math.abs(job.run_at - t) < 1e-3, ("run_at %.6f, want %.6f"):format(job.run_at, t))
      assert.equals(key, job.key)
      assert.equals(4, job.priority)
    end)

    it("with no key and priority 0 by default", function()
      local name = helper.name("fields-default")
      helper.schedule(s, name, nil)
      local got
      s:on(name, function(_, job) got = job end)
      assert.equals(1, s:run{ drain = true })
      assert.is_nil(got.key)
      assert.equals(0, got.priority)
    end)

    it("with the max_attempts given to schedule", function()
      local name = helper.name("fields-max")
      helper.schedule(s, name, nil, { max_attempts = 3 })
      local got
      s:on(name, function(_, job) got = job end)
      assert.equals(1, s:run{ drain = true })
      assert.equals(3, got.max_attempts)
    end)

    it("with the instance's max_attempts default", function()
      local s7 = helper.new{ max_attempts = 7 }
      local name = helper.name("fields-instance-max")
      helper.schedule(s7, name, nil)
      local got
      s7:on(name, function(_, job) got = job end)
      assert.equals(1, s7:run{ drain = true })
      assert.equals(7, got.max_attempts)
    end)

    it("with the listener's max_attempts option", function()
      local name = helper.name("fields-listener-max")
      helper.schedule(s, name, nil)
      local got
      s:on(name, function(_, job) got = job end, { max_attempts = 2 })
      assert.equals(1, s:run{ drain = true })
      assert.equals(2, got.max_attempts)
    end)
  end)

  it("can be a callable table", function()
    local name = helper.name("callable")
    local id = helper.schedule(s, name, { x = 1 })
    local got
    local callable = setmetatable({}, {
      __call = function(self, payload, job) got = { self = self, payload = payload, id = job.id } end,
    })
    s:on(name, callable)
    assert.equals(1, s:run{ drain = true })
    assert.equals(callable, got.self)
    assert.same({ x = 1 }, got.payload)
    assert.equals(id, got.id)
  end)

  it("are replaced by a second on() for the same name", function()
    local name = helper.name("replace")
    local calls = {}
    s:on(name, function() calls[#calls + 1] = "first" end)
    s:on(name, function() calls[#calls + 1] = "second" end)
    helper.schedule(s, name, nil)
    assert.equals(1, s:run{ drain = true })
    assert.same({ "second" }, calls)
  end)

  it("are removed by off()", function()
    local name, other = helper.name("off"), helper.name("still-on")
    local calls = 0
    s:on(name, function() calls = calls + 1 end)
    s:on(other, function() calls = calls + 100 end)
    s:off(name)
    local id = helper.schedule(s, name, nil)
    helper.schedule(s, other, nil)
    assert.equals(1, s:run{ drain = true })
    assert.equals(100, calls)
    local job = helper.ok(s:job(id))
    assert.equals("scheduled", job.state)
    assert.equals(0, job.attempt)
    -- registering again makes it runnable
    s:on(name, function() calls = calls + 1 end)
    assert.equals(1, s:run{ drain = true })
    assert.equals(101, calls)
  end)

  it("registered by a listener take their jobs in the same run()", function()
    local first, second = helper.name("first"), helper.name("second")
    local ran = {}
    s:on(first, function()
      ran[#ran + 1] = "first"
      s:on(second, function() ran[#ran + 1] = "second" end)
    end)
    helper.schedule(s, second, nil)
    helper.schedule(s, first, nil)
    assert.equals(2, s:run{ drain = true })
    assert.same({ "first", "second" }, ran)
  end)

  it("off() for a name without a listener is harmless", function()
    s:off(helper.name("never-registered"))
    s:off(helper.name("never-registered"))
  end)

  it("belong to one instance", function()
    local name = helper.name("per-instance")
    local s2 = helper.new()
    s:on(name, function() end)
    local id = helper.schedule(s, name, nil)
    assert.equals(0, s2:run{ drain = true })
    assert.equals("scheduled", helper.ok(s2:job(id)).state)
    s2:off(name)
    assert.equals(1, s:run{ drain = true })
  end)

  describe("on() raises", function()
    local fn = function() end
    it("for an empty or non-string name", function()
      helper.raises(function() s:on("", fn) end)
      helper.raises(function() s:on(nil, fn) end)
      helper.raises(function() s:on(42, fn) end)
      helper.raises(function() s:on({}, fn) end)
    end)

    it("for something that is not callable", function()
      local name = helper.name("notcallable")
      helper.raises(function() s:on(name, nil) end)
      helper.raises(function() s:on(name, 42) end)
      helper.raises(function() s:on(name, "print") end)
      helper.raises(function() s:on(name, {}) end)
      helper.raises(function() s:on(name, setmetatable({}, { __index = {} })) end)
    end)

    it("for an unknown option, naming it", function()
      helper.raises(function() s:on(helper.name("opt"), fn, { max_attempt = 3 }) end, "max_attempt")
    end)

    it("for bad max_attempts", function()
      local name = helper.name("opt")
      helper.raises(function() s:on(name, fn, { max_attempts = 0 }) end)
      helper.raises(function() s:on(name, fn, { max_attempts = -1 }) end)
      helper.raises(function() s:on(name, fn, { max_attempts = "2" }) end)
      helper.raises(function() s:on(name, fn, { max_attempts = 1.5 }) end)
    end)

    it("for options that are not a table", function()
      helper.raises(function() s:on(helper.name("opt"), fn, "fast") end)
    end)

    it("for off() with a bad name", function()
      helper.raises(function() s:off(nil) end)
      helper.raises(function() s:off(42) end)
    end)
  end)

  describe("that fail", function()
    local backoff_calls
    local fs
    before_each(function()
      backoff_calls = {}
      fs = helper.new{
        max_attempts = 3,
        backoff = function(attempt)
          backoff_calls[#backoff_calls + 1] = attempt
          return 60
        end,
      }
    end)

    it("with a string have the message and a traceback recorded, and are retried later", function()
      local name = helper.name("fail-string")
      local message = "boom-" .. helper.name("msg")
      local id = helper.schedule(fs, name, nil)
      local calls = 0
      fs:on(name, function() calls = calls + 1; error(message) end)
      local t0 = helper.now()
      fs:run{ drain = true }
      local t1 = helper.now()
      assert.equals(1, calls)
      local job = helper.ok(fs:job(id))
      assert.equals("scheduled", job.state)
      assert.equals(1, job.attempt)
      assert.equals("string", type(job.last_error))
      assert.is_true(helper.contains(job.last_error, message), job.last_error)
      assert.is_true(helper.contains(job.last_error, "stack traceback"), job.last_error)
      assert.is_true(helper.contains(job.last_error, "listener_spec"), job.last_error)
      -- backoff(1) = 60 seconds
      assert.same({ 1 }, backoff_calls)
      assert.is_true(job.run_at >= t0 + 60 - 1 and job.run_at <= t1 + 60 + 1,
        ("run_at %.3f, want about %.3f"):format(job.run_at, t0 + 60))
      -- not due again yet
      assert.equals(0, fs:run{ drain = true })
      assert.equals(1, calls)
    end)

    it("with a table have it recorded", function()
      local name = helper.name("fail-table")
      local id = helper.schedule(fs, name, nil)
      fs:on(name, function() error({ code = 42, reason = "table-error" }) end)
      fs:run{ drain = true }
      local job = helper.ok(fs:job(id))
      assert.equals("scheduled", job.state)
      assert.equals(1, job.attempt)
      assert.equals("string", type(job.last_error))
      assert.is_true(#job.last_error > 0)
    end)

    it("with a table that has __tostring have its text recorded", function()
      local name = helper.name("fail-tostring")
      local text = "custom-error-" .. helper.name("t")
      local id = helper.schedule(fs, name, nil)
      fs:on(name, function()
        error(setmetatable({}, { __tostring = function() return text end }))
      end)
      fs:run{ drain = true }
      local job = helper.ok(fs:job(id))
      assert.is_true(helper.contains(job.last_error, text), tostring(job.last_error))
    end)

    it("with a number have it recorded", function()
      local name = helper.name("fail-number")
      local id = helper.schedule(fs, name, nil)
      fs:on(name, function() error(4242) end)
      fs:run{ drain = true }
      assert.is_true(helper.contains(helper.ok(fs:job(id)).last_error, "4242"))
    end)

    it("by yielding fail like any other error", function()
      local name = helper.name("yield")
      local id = helper.schedule(fs, name, nil)
      fs:on(name, function() coroutine.yield("nope") end)
      local n, err = fs:run{ drain = true }
      assert.is_not_nil(n, tostring(err))
      local job = helper.ok(fs:job(id))
      assert.equals("scheduled", job.state)
      assert.equals(1, job.attempt)
      assert.equals("string", type(job.last_error))
      assert.is_true(#job.last_error > 0)
    end)

    it("by yielding fail even when run is called inside a coroutine", function()
      local name = helper.name("yield-co")
      local id = helper.schedule(fs, name, nil)
      local after_yield = false
      fs:on(name, function()
        coroutine.yield("escaped")
        after_yield = true
      end)
      local co = coroutine.create(function() return fs:run{ drain = true } end)
      local ok, res = coroutine.resume(co)
      assert.is_true(ok, tostring(res))
      assert.equals("dead", coroutine.status(co), "the listener's yield escaped run()")
      assert.are_not.equal("escaped", res)
      assert.is_false(after_yield)
      local job = helper.ok(fs:job(id))
      assert.equals(1, job.attempt)
      assert.is_true(type(job.last_error) == "string" and #job.last_error > 0)
    end)

    it("do not stop the other jobs", function()
      local name = helper.name("fail-some")
      local ids = {}
      for i = 1, 6 do ids[i] = helper.schedule(fs, name, i) end
      local ran = {}
      fs:on(name, function(payload)
        if payload % 2 == 0 then error("even " .. payload) end
        ran[#ran + 1] = payload
      end)
      fs:run{ drain = true }
      table.sort(ran)
      assert.same({ 1, 3, 5 }, ran)
      for i, id in ipairs(ids) do
        if i % 2 == 1 then
          assert.is_nil(fs:job(id))
        else
          local job = helper.ok(fs:job(id))
          assert.is_true(helper.contains(job.last_error, "even " .. i), job.last_error)
        end
      end
    end)

    it("leave a job that succeeds on a later attempt to finish normally", function()
      local s0 = helper.new{ backoff = function() return 0 end }
      local name = helper.name("flaky")
      local id = helper.schedule(s0, name, nil)
      local attempts = {}
      s0:on(name, function(_, job)
        attempts[#attempts + 1] = job.attempt
        if #attempts > 5 then s0:stop() end -- guard against endless retries
        if job.attempt < 3 then error("not yet") end
      end)
      helper.drain_until(s0, function() return s0:job(id) == nil end, 5)
      assert.same({ 1, 2, 3 }, attempts)
      assert.is_nil(s0:job(id))
    end)
  end)

  describe("retries", function()
    it("call backoff with the attempt number and end in state failed after max_attempts", function()
      local calls = {}
      local s0 = helper.new{ max_attempts = 3, backoff = function(attempt)
        calls[#calls + 1] = attempt
        return 0
      end }
      local name = helper.name("exhaust")
      local id = helper.schedule(s0, name, nil)
      local attempts = {}
      s0:on(name, function(_, job)
        attempts[#attempts + 1] = job.attempt
        if #attempts > 6 then s0:stop() end -- guard against endless retries
        error("always-" .. job.attempt)
      end)
      helper.drain_until(s0, function()
        local job = s0:job(id)
        return job and job.state == "failed"
      end, 6)
      assert.same({ 1, 2, 3 }, attempts)
      assert.equals(1, calls[1])
      assert.equals(2, calls[2])
      local job = helper.ok(s0:job(id))
      assert.equals("failed", job.state)
      assert.equals(3, job.attempt)
      assert.equals(3, job.max_attempts)
      assert.is_true(helper.contains(job.last_error, "always-3"), job.last_error)
      -- failed jobs are kept and not run again
      assert.equals(0, s0:run{ drain = true })
      assert.equals(3, #attempts)
    end)

    it("stop after the listener's max_attempts", function()
      local s0 = helper.new{ backoff = function() return 0 end }
      local name = helper.name("listener-max")
      local id = helper.schedule(s0, name, nil)
      local attempts = 0
      s0:on(name, function()
        attempts = attempts + 1
        if attempts > 5 then s0:stop() end
        error("nope")
      end, { max_attempts = 2 })
      helper.drain_until(s0, function()
        local job = s0:job(id)
        return job and job.state == "failed"
      end, 5)
      assert.equals(2, attempts)
      assert.equals("failed", helper.ok(s0:job(id)).state)
    end)

    it("stop after the job's own max_attempts", function()
      local s0 = helper.new{ backoff = function() return 0 end }
      local name = helper.name("job-max")
      local id = helper.schedule(s0, name, nil, { max_attempts = 1 })
      local attempts = 0
      s0:on(name, function()
        attempts = attempts + 1
        if attempts > 5 then s0:stop() end
        error("once")
      end)
      helper.drain_until(s0, function()
        local job = s0:job(id)
        return job and job.state == "failed"
      end, 4)
      assert.equals(1, attempts)
      local job = helper.ok(s0:job(id))
      assert.equals("failed", job.state)
      assert.equals(1, job.attempt)
    end)

    it("wait backoff(attempt) seconds (fractions allowed)", function()
      local s0 = helper.new{ backoff = function() return 0.4 end }
      local name = helper.name("backoff-fraction")
      local id = helper.schedule(s0, name, nil)
      local starts = {}
      s0:on(name, function()
        starts[#starts + 1] = helper.now()
        if #starts == 1 then error("first") end
      end)
      assert.is_true(s0:run{ seconds = 2 })
      assert.equals(2, #starts)
      local gap = starts[2] - starts[1]
      assert.is_true(gap >= 0.35, ("retried after %.3f s"):format(gap))
      assert.is_true(gap < 0.4 + helper.SLACK, ("retried after %.3f s"):format(gap))
      assert.is_nil(s0:job(id))
    end)

    it("use a default backoff that delays the next attempt", function()
      local name = helper.name("default-backoff")
      local id = helper.schedule(s, name, nil)
      s:on(name, function() error("default backoff") end)
      local t0 = helper.now()
      s:run{ drain = true }
      local job = helper.ok(s:job(id))
      assert.equals("scheduled", job.state)
      assert.equals(1, job.attempt)
      assert.is_true(job.run_at >= t0 - 0.01, "run_at went back in time")
      assert.is_true(job.run_at < helper.now() + 24 * 3600, "first backoff longer than a day")
    end)
  end)
end)
