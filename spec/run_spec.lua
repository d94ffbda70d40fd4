-- run(): drain, seconds, stop() from a listener, sleeping until the next due
-- job, nested run, option checking.  (run() without options, signals and
-- notifications from other processes are in workers_spec.)
local helper = require "spec.helper"

describe("run", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  describe("{ drain = true }", function()
    it("runs every due job for the registered listeners and returns how many", function()
      local name = helper.name("drain")
      local due, later = {}, helper.schedule(s, name, "later", { delay = 3600 })
      for i = 1, 5 do due[helper.schedule(s, name, i)] = i end
      local ran = {}
      s:on(name, function(payload, job) ran[job.id] = payload end)
      local n = s:run{ drain = true }
      assert.equals("integer", math.type(n))
      assert.equals(5, n)
      assert.same(due, ran)
      -- successful jobs are gone, the future one waits
      for id in pairs(due) do assert.is_nil(s:job(id)) end
      assert.equals("scheduled", helper.ok(s:job(later)).state)
      assert.equals(1, helper.count_jobs(name))
    end)

    it("returns 0 when nothing is due", function()
      s:on(helper.name("idle"), function() error("must not run") end)
      local n = s:run{ drain = true }
      assert.equals(0, n)
      assert.equals("integer", math.type(n))
    end)

    it("does not return before the listeners are done, and returns promptly", function()
      local name = helper.name("prompt")
      helper.schedule(s, name, nil)
      local done = false
      s:on(name, function() helper.sleep(0.2); done = true end)
      local elapsed, n = helper.timed(s.run, s, { drain = true })
      assert.equals(1, n)
      assert.is_true(done)
      assert.is_true(elapsed < 2, "drain took " .. elapsed)
    end)

    it("only claims jobs whose name has a listener", function()
      local mine, other = helper.name("mine"), helper.name("other")
      local id_mine = helper.schedule(s, mine, nil)
      local id_other = helper.schedule(s, other, nil)
      local ran = {}
      s:on(mine, function(_, job) ran[#ran + 1] = job.id end)
      assert.equals(1, s:run{ drain = true })
      assert.same({ id_mine }, ran)
      local job = helper.ok(s:job(id_other))
      assert.equals("scheduled", job.state)
      assert.equals(0, job.attempt)
    end)

    it("runs jobs that listeners schedule as due now", function()
      local a, b, c = helper.name("chain-a"), helper.name("chain-b"), helper.name("chain-c")
      local order = {}
      s:on(a, function(payload)
        order[#order + 1] = "a"
        helper.ok(s:schedule(b, payload + 1))
      end)
      s:on(b, function(payload)
        order[#order + 1] = "b"
        helper.ok(s:schedule(c, payload + 1))
      end)
      s:on(c, function(payload) order[#order + 1] = "c" .. payload end)
      helper.schedule(s, a, 1)
      assert.equals(3, s:run{ drain = true })
      assert.same({ "a", "b", "c3" }, order)
    end)

    it("does not wait for jobs that listeners schedule for later", function()
      local name = helper.name("later")
      local later_id
      s:on(name, function(payload)
        if payload == "first" then later_id = helper.ok(s:schedule(name, "later", { delay = 30 })) end
      end)
      helper.schedule(s, name, "first")
      local elapsed, n = helper.timed(s.run, s, { drain = true })
      assert.equals(1, n)
      assert.is_true(elapsed < 5)
      assert.equals("scheduled", helper.ok(s:job(later_id)).state)
    end)

    it("runs a job only once", function()
      local name = helper.name("once")
      local count = 0
      s:on(name, function() count = count + 1 end)
      helper.schedule(s, name, nil)
      assert.equals(1, s:run{ drain = true })
      assert.equals(0, s:run{ drain = true })
      assert.equals(1, count)
    end)
  end)

  describe("{ seconds = n }", function()
    it("returns true after about n seconds", function()
      local elapsed, ok = helper.timed(s.run, s, { seconds = 0.5 })
      assert.is_true(ok)
      assert.is_true(elapsed >= 0.45, "returned early: " .. elapsed)
      assert.is_true(elapsed < 3, "returned late: " .. elapsed)
    end)

    it("runs a job that falls due while it sleeps, on time", function()
      local name = helper.name("timely")
      local started
      s:on(name, function() started = helper.now() end)
      local t = helper.now() + 0.3
      helper.schedule(s, name, nil, t)
      local elapsed, ok = helper.timed(s.run, s, { seconds = 2 })
      assert.is_true(ok)
      assert.is_not_nil(started, "the job did not run")
      assert.is_true(started >= t - 0.01, ("ran %.3f s early"):format(t - started))
      assert.is_true(started - t < helper.SLACK, ("ran %.3f s late"):format(started - t))
      assert.is_true(elapsed >= 1.5 and elapsed < 4, "run{seconds=2} took " .. elapsed)
    end)

    it("runs due jobs at once", function()
      local name = helper.name("immediate")
      local started
      s:on(name, function() started = helper.now() end)
      helper.schedule(s, name, nil)
      local t0 = helper.now()
      assert.is_true(s:run{ seconds = 0.5 })
      assert.is_not_nil(started)
      assert.is_true(started - t0 < 0.4, ("started after %.3f s"):format(started - t0))
    end)

    it("wakes for a job a listener schedules a little later", function()
      local name = helper.name("rescheduled")
      local starts = {}
      local due
      s:on(name, function(payload)
        starts[#starts + 1] = helper.now()
        if payload == 1 then
          due = helper.now() + 0.5
          helper.ok(s:schedule(name, 2, due))
        end
      end)
      helper.schedule(s, name, 1)
      assert.is_true(s:run{ seconds = 2.5 })
      assert.equals(2, #starts)
      assert.is_true(starts[2] >= due - 0.01, ("ran %.3f s early"):format(due - starts[2]))
      assert.is_true(starts[2] - due < helper.SLACK, ("ran %.3f s late"):format(starts[2] - due))
    end)

    it("returns sooner when a listener calls stop()", function()
      local name = helper.name("stop-seconds")
      s:on(name, function() s:stop() end)
      helper.schedule(s, name, nil)
      local elapsed, ok = helper.timed(s.run, s, { seconds = 20 })
      assert.is_true(ok)
      assert.is_true(elapsed < 5, "stop() did not end run: " .. elapsed)
    end)
  end)

  describe("stop() from a listener", function()
    it("finishes the job in hand and releases the rest of the batch", function()
      local name = helper.name("stop-batch")
      local ids = {}
      for i = 1, 6 do ids[i] = helper.schedule(s, name, i) end
      local ran = {}
      s:on(name, function(_, job)
        ran[#ran + 1] = job.id
        if #ran == 1 then s:stop() end
      end)
      local elapsed, ok = helper.timed(s.run, s, { seconds = 20 })
      assert.is_true(ok)
      assert.is_true(elapsed < 5, "stop() did not end run: " .. elapsed)
      assert.equals(1, #ran)
      -- the job in hand was recorded as done
      assert.is_nil(s:job(ran[1]))
      -- the others were released at once, not left running until the lease ends
      local left = {}
      for _, id in ipairs(ids) do
        if id ~= ran[1] then
          local job = helper.ok(s:job(id))
          assert.equals("scheduled", job.state)
          left[#left + 1] = id
        end
      end
      assert.equals(5, #left)
      -- ...and a later run picks them up
      local ran2 = {}
      s:on(name, function(_, job) ran2[#ran2 + 1] = job.id end)
      assert.equals(5, s:run{ drain = true })
      table.sort(ran2)
      assert.same(left, ran2)
    end)

    it("lets another instance run the released jobs at once", function()
      local name = helper.name("stop-release")
      for i = 1, 4 do helper.schedule(s, name, i) end
      local count = 0
      s:on(name, function() count = count + 1; s:stop() end)
      assert.is_true(s:run{ seconds = 10 })
      assert.equals(1, count)
      local s2 = helper.new()
      local count2 = 0
      s2:on(name, function() count2 = count2 + 1 end)
      assert.equals(3, s2:run{ drain = true })
      assert.equals(3, count2)
    end)

    it("does not prevent the next run", function()
      local name = helper.name("stop-again")
      helper.schedule(s, name, 1)
      s:on(name, function() s:stop() end)
      assert.is_true(s:run{ seconds = 10 })
      local elapsed, ok = helper.timed(s.run, s, { seconds = 0.3 })
      assert.is_true(ok)
      assert.is_true(elapsed >= 0.25, "a stale stop() ended the next run early: " .. elapsed)
    end)
  end)

  describe("nested in a listener", function()
    for _, opts in ipairs({ { drain = true }, { seconds = 0.1 }, false }) do
      local label = opts and (next(opts) .. "") or "no options"
      it("returns nil, err (" .. label .. ")", function()
        local name = helper.name("nested")
        local result
        if not opts then
          -- if nesting went undetected, this job would end the inner run()
          -- instead of letting it block forever
          local stopper = helper.name("nested-stopper")
          s:on(stopper, function() s:stop() end)
          helper.schedule(s, stopper, nil, { delay = 1 })
        end
        s:on(name, function()
          result = table.pack(pcall(function()
            if opts then return s:run(opts) else return s:run() end
          end))
        end)
        helper.schedule(s, name, nil)
        local elapsed, n = helper.timed(s.run, s, { drain = true })
        assert.equals(1, n)
        assert.is_true(elapsed < 5)
        assert.is_true(result[1], "nested run raised: " .. tostring(result[2]))
        helper.runtime_error(result[2], result[3], "nested run")
      end)
    end
  end)

  describe("raises on bad options", function()
    it("an unknown option, naming it", function()
      helper.raises(function() s:run{ seconds = 1, bogus_option = true } end, "bogus_option")
    end)

    it("a non-table argument", function()
      helper.raises(function() s:run("drain") end)
      helper.raises(function() s:run(5) end)
    end)

    it("seconds that is not a non-negative finite number", function()
      helper.raises(function() s:run{ seconds = "1" } end)
      helper.raises(function() s:run{ seconds = 0 / 0 } end)
      helper.raises(function() s:run{ seconds = -1 } end)
    end)
  end)
end)
