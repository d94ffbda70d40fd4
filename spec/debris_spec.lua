-- The loop cannot leave debris (issue 14, item 8): a Lua error that escapes
-- run() in the middle of a batch, worker ids that two hosts cannot share,
-- and abandon() refusing to release the jobs of a worker still connected.
local helper = require "spec.helper"
local core = require "scheduler.core"
local memlimit = require "spec.memlimit"

-- What run() starts and installs, from /proc/self/status: the threads of
-- this process, and whether it catches SIGINT and SIGTERM (bits 1 and 14 of
-- the SigCgt mask; other bits change for reasons of their own: glibc
-- installs a handler of its own when the first thread starts).
local function own_threads()
  local status = helper.read_file("/proc/self/status") or ""
  return tonumber(status:match("\nThreads:%s*(%d+)"))
end

local function catches_int_term()
  local status = helper.read_file("/proc/self/status") or ""
  local mask = tonumber(status:match("\nSigCgt:%s*(%x+)"), 16)
  return ("INT %s, TERM %s"):format(mask & (1 << 1) ~= 0, mask & (1 << 14) ~= 0)
end

describe("debris", function()
  after_each(function()
    memlimit.allow()
    helper.cleanup()
  end)

  describe("a Lua error that escapes run()", function()
    -- The listener of the first job makes every new table fail, so run()
    -- cannot build the next job's arguments (push_job's lua_createtable):
    -- a real memory error, raised by Lua in the loop's own C code, outside
    -- any listener's protected call.
    local function provoke(s, name)
      local arm = helper.schedule(s, name, "arm", { priority = 0 })
      local victim = helper.schedule(s, name, nil, { priority = 1 })
      local runs = {}
      s:on(name, function(payload, job)
        runs[#runs + 1] = { id = job.id, attempt = job.attempt }
        if payload == "arm" then memlimit.refuse("tables") end
      end)
      local ok, v, err = pcall(s.run, s)
      local refused = memlimit.allow()
      return { ok = ok, v = v, err = err, refused = refused, runs = runs, arm = arm, victim = victim }
    end

    it("stops the heartbeat thread, restores the signal handlers and returns nil, err", function()
      local name = helper.name("escape")
      local s = helper.new()
      local threads_before, signals_before = own_threads(), catches_int_term()
      local r = provoke(s, name)
      assert.is_true(r.refused > 0, "the trap did not fire")
      assert.is_true(r.ok, "run() raised: " .. tostring(r.v))
      helper.runtime_error(r.v, r.err, "run()")
      assert.matches("not enough memory", r.err)
      assert.equals(threads_before, own_threads())
      assert.equals(signals_before, catches_int_term())
      assert.is_false(s._core:running())
      assert.same({ { id = r.arm, attempt = 1 } }, r.runs)
    end)

    it("ends the open transaction: another worker runs the unstarted job at once, unattempted", function()
      local name = helper.name("escape-tx")
      local s = helper.new()
      local r = provoke(s, name)
      helper.runtime_error(r.v, r.err, "run()")
      -- another connection: rows still locked by the first one's claim
      -- transaction would be skipped (SKIP LOCKED), a lease would wait
      local other = helper.new()
      local runs = {}
      other:on(name, function(_, job) runs[#runs + 1] = { id = job.id, attempt = job.attempt } end)
      assert.equals(1, other:run{ drain = true })
      assert.same({ { id = r.victim, attempt = 1 } }, runs)
      -- the job that ran before the error is recorded as done, once
      assert.is_nil(other:job(r.arm))
      assert.equals(0, helper.count_jobs(name))
      assert.equals(1, #r.runs)
    end)

    it("leaves the instance usable: a second run() runs the jobs", function()
      local name = helper.name("escape-again")
      local s = helper.new()
      local r = provoke(s, name)
      helper.runtime_error(r.v, r.err, "run()")
      local later = helper.schedule(s, name, nil)
      assert.equals(2, s:run{ drain = true })
      table.sort(r.runs, function(a, b) return a.id < b.id end)
      assert.same({ { id = r.arm, attempt = 1 }, { id = r.victim, attempt = 1 }, { id = later, attempt = 1 } },
        r.runs)
      assert.equals(0, helper.count_jobs(name))
      -- and it still stops on a signal, and hands its handlers back again
      local signals_before = catches_int_term()
      assert.is_true(s:run{ seconds = 0.2 })
      assert.equals(signals_before, catches_int_term())
    end)
  end)

  describe("worker ids", function()
    it("end with a random suffix: two instances of one process never share one", function()
      local a, b = core.default_worker_id(), core.default_worker_id()
      assert.matches("^.+:%d+:" .. ("%x"):rep(12) .. "$", a)
      assert.not_equals(a, b)
      assert.equals(a:match("^(.+):%x+$"), b:match("^(.+):%x+$")) -- same host and pid
      local seen = {}
      for _ = 1, 1000 do -- 48 random bits: a repeat here has odds of 2e-9
        local id = core.default_worker_id()
        assert.is_nil(seen[id], id)
        seen[id] = true
      end
      assert.matches("^.+:%d+:x$", core.default_worker_id("x")) -- the supervisor's own suffix
      helper.raises(function() core.default_worker_id("a:b") end, "letters and digits")
    end)

    -- Two "containers" with one hostname, each with its own pid namespace,
    -- so that both workers are pid 1 on host "twin": before the suffix both
    -- were "twin:1", and releasing the dead one's jobs released the live
    -- one's too.
    local function namespaces()
      local _, ok = helper.sh("unshare --pid --fork --uts true >/dev/null 2>&1")
      return ok
    end

    it("keep apart two hosts with the same hostname and pid: abandon releases the dead one's job only", function()
      if not namespaces() then
        pending("needs unshare with pid and uts namespaces (root)")
        return
      end
      local name = helper.name("twins")
      local s = helper.new()
      local jobs = { helper.schedule(s, name, { sleep = 60 }), helper.schedule(s, name, { sleep = 60 }) }
      local wrap = { "unshare", "--pid", "--fork", "--uts", "sh", "-c", 'hostname twin && exec "$@"', "sh" }
      local env = { WORKER_NAMES = name, WORKER_ID = "default", WORKER_BATCH_MAX = 1 }
      local a, b = helper.spawn(env, wrap), helper.spawn(env, wrap)
      local id_a, id_b = a:wait_file("id", 10), b:wait_file("id", 10)
      assert.is_truthy(id_a and id_b, helper.describe_all { a, b })
      assert.matches("^twin:1:%x+$", id_a)
      assert.matches("^twin:1:%x+$", id_b)
      assert.not_equals(id_a, id_b)
      -- each holds one job, leased (a held batch is settled within a second)
      local holder = helper.wait_for(function()
        local rows = helper.ok(s:jobs { name = name, state = "running" })
        if #rows < 2 then return nil end
        local by = {}
        for _, j in ipairs(rows) do
          if j.locked_until then by[j.locked_by] = j.id end -- leased (held: none)
        end
        return by[id_a] and by[id_b] and by
      end, 10)
      assert.is_truthy(holder, helper.describe_all { a, b })
      assert.is_true(a:kill("KILL"))
      -- (unshare reports the kill as exit status 1)
      assert.is_truthy(helper.wait_for(function() return not helper.alive(a:pid()) end, 5), a:describe())
      -- (the server may take a moment to end the dead worker's session)
      local n, err = helper.wait_for(function()
        local v, e = s:abandon(id_a)
        if v == false then return nil end
        return v or error(e)
      end, 5)
      assert.equals(1, n, tostring(err))
      local mine, theirs = helper.ok(s:job(holder[id_a])), helper.ok(s:job(holder[id_b]))
      assert.equals("scheduled", mine.state)
      assert.equals("running", theirs.state)
      assert.equals(id_b, helper.ok(s:jobs { id = holder[id_b] })[1].locked_by)
      assert.is_true(b:alive(), b:describe())
      assert.equals(1, #b:events("start"))
    end)
  end)
end)
