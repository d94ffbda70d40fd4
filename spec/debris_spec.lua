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
end)
