-- job(), jobs(), cancel(), retry(), retry_failed(), keys, priority and the
-- order of due jobs.
local helper = require "spec.helper"

-- A scheduler instance whose jobs of `name` always fail, with no backoff and
-- `max_attempts` attempts; returns the id of a job driven to state "failed".
local function failed_job(s, name, max_attempts)
  local id = helper.schedule(s, name, { fail = true }, { max_attempts = max_attempts or 2 })
  local calls = 0
  s:on(name, function(payload)
    calls = calls + 1
    if calls > 10 then s:stop() end -- guard against endless retries
    if type(payload) == "table" and payload.fail then error("failing on purpose") end
  end)
  helper.drain_until(s, function()
    local job = s:job(id)
    return job and job.state == "failed"
  end, 6)
  local job = s:job(id)
  assert(job and job.state == "failed", "could not make a failed job")
  return id
end

describe("jobs", function()
  local s
  before_each(function() s = helper.new{ backoff = function() return 0 end } end)
  after_each(helper.cleanup)

  describe("job(id)", function()
    it("describes a waiting job", function()
      local name, key = helper.name("describe"), helper.name("key")
      local t = helper.now() + 120.5
      local id = helper.schedule(s, name, { a = { 1, 2 } }, { at = t, key = key, priority = 2, max_attempts = 4 })
      local job = helper.ok(s:job(id))
      assert.equals(id, job.id)
      assert.equals(name, job.name)
      assert.same({ a = { 1, 2 } }, job.payload)
      assert.equals("float", math.type(job.run_at))
      assert.is_true(math.abs(job.run_at - t) < 1e-3)
      assert.equals(0, job.attempt)
      assert.equals(4, job.max_attempts)
      assert.equals("scheduled", job.state)
      assert.is_nil(job.last_error)
      assert.equals(key, job.key)
      assert.equals(2, job.priority)
    end)

    it("shows a running job as running, to its listener and then to everyone; jobs() adds its worker and lease", function()
      local name = helper.name("running")
      local id = helper.schedule(s, name, nil)
      local own, other, listed
      local observer = helper.new()
      s:on(name, function()
        own = s:job(id)
        -- the listener's own call turned the batch's row locks into a lease
        other = observer:job(id)
        listed = helper.ok(observer:jobs { id = id })[1]
      end)
      local t = helper.now()
      assert.equals(1, s:run{ drain = true })
      assert.is_not_nil(own)
      assert.equals("running", own.state)
      assert.equals(1, own.attempt)
      assert.equals("running", other.state)
      assert.equals(1, other.attempt)
      assert.equals("running", listed.state)
      assert.equals(1, listed.attempt)
      assert.matches(":%d+:%x+$", listed.locked_by) -- host:pid:suffix
      assert.is_true(listed.locked_until > t and listed.locked_until < t + 60, tostring(listed.locked_until))
    end)

    it("shows a job in a batch as running while held and once settled (lease/4, at most 1 s)",
      function()
        local name = helper.name("held")
        local id = helper.schedule(s, name, nil)
        local observer = helper.new()
        assert(observer:schema_version()) -- connected before the listener looks
        local states = {}
        local r = helper.new{ lease = 0.8 }
        r:on(name, function()
          -- (the first mark of a worker opens its marker's connection)
          local held = helper.wait_for(function()
            local j = observer:job(id)
            return j.state == "running" and j
          end, 0.15, 0.01)
          states[#states + 1] = held or observer:job(id)
          helper.sleep(0.45)
          states[#states + 1] = observer:job(id)
        end)
        assert.equals(1, r:run{ drain = true })
        -- first held by a row lock, which reads as waiting, but marked
        -- running in its batch's record once it has run 10 ms (see
        -- running_spec), its attempt counted; then settled into a lease
        -- after 0.2 s
        assert.equals("running", states[1].state)
        assert.equals(1, states[1].attempt)
        assert.equals("running", states[2].state)
        assert.equals(1, states[2].attempt)
        assert.is_nil(s:job(id))
      end)

    it("keeps every field of a job given back, retried or leased from a batch", function()
      -- On PostgreSQL a batch deletes its jobs as it claims them (in its
      -- open transaction): the jobs that stay are written back whole.
      local name = helper.name("whole")
      local payload = { text = 'a "quote", a back\\slash,\na line and ünïcödé 🎉', nested = { list = { 1, 2.5, true } } }
      local at = helper.now() - 5.25
      local ids = {}
      for i = 1, 3 do
        ids[i] = helper.schedule(s, name, payload, { at = at, key = name .. i, priority = 2, max_attempts = 5 })
      end
      local before = {}
      for i = 1, 3 do before[i] = helper.ok(s:jobs { id = ids[i] })[1] end
      local observer = helper.new()
      local r = helper.new{ lease = 0.8, backoff = function() return 3600 end }
      local seen2, own3
      r:on(name, function(p, job)
        assert.same(payload, p)
        if job.id == ids[1] then
          -- runs past lease/4: the batch is settled, the other two go back
          helper.sleep(0.5)
          seen2 = helper.ok(observer:jobs { id = ids[2] })[1]
          error("boom 1")
        elseif job.id == ids[2] then
          error("boom 2")
        else
          -- calls of its own (each admin call too) first turn the batch into leases
          own3 = helper.ok(r:jobs { id = ids[3] })[1]
          assert.is_table(helper.ok(r:stats()))
          assert.equals(0, helper.ok(r:retry_failed { name = helper.name("none") }))
          assert.is_number(helper.ok(r:schema_version()))
        end
      end)
      assert.equals(3, r:run{ drain = true })
      local function same_fields(row, i)
        assert.equals(ids[i], row.id)
        assert.equals(name, row.name)
        assert.same(payload, row.payload)
        assert.equals(name .. i, row.key)
        assert.equals(2, row.priority)
        assert.equals(5, row.max_attempts)
        assert.is_true(math.abs(row.created_at - before[i].created_at) < 1e-5)
      end
      same_fields(seen2, 2)
      assert.equals("scheduled", seen2.state) -- handed back, unstarted
      assert.equals(0, seen2.attempt)
      assert.is_true(math.abs(seen2.run_at - before[2].run_at) < 1e-5)
      same_fields(own3, 3)
      assert.equals("running", own3.state)
      assert.equals(1, own3.attempt)
      assert.is_true(math.abs(own3.run_at - before[3].run_at) < 1e-5)
      assert.is_truthy(own3.locked_by)
      for i = 1, 2 do
        local row = helper.ok(s:jobs { id = ids[i] })[1]
        same_fields(row, i)
        assert.equals("scheduled", row.state)
        assert.equals(1, row.attempt)
        assert.equals("boom " .. i, row.last_error:match("boom %d"))
        assert.is_true(row.run_at > helper.now() + 3500)
        assert.is_nil(row.locked_by)
      end
      assert.is_nil(s:job(ids[3]))
    end)

    it("returns nil for a job that finished or never existed", function()
      local name = helper.name("gone")
      local id = helper.schedule(s, name, nil)
      s:on(name, function() end)
      assert.equals(1, s:run{ drain = true })
      assert.is_nil(s:job(id))
      assert.is_nil(s:job(math.maxinteger))
      assert.is_nil(s:job(-1))
      assert.is_nil(s:job(0))
    end)

    it("raises for an id that is not an integer", function()
      helper.raises(function() s:job("1") end)
      helper.raises(function() s:job(nil) end)
      helper.raises(function() s:job(1.5) end)
      helper.raises(function() s:job({}) end)
    end)
  end)

  describe("cancel(id)", function()
    it("removes a waiting job and returns true", function()
      local name = helper.name("cancel")
      local id = helper.schedule(s, name, nil)
      local other = helper.schedule(s, name, nil)
      assert.is_true(s:cancel(id))
      assert.is_nil(s:job(id))
      local ran = {}
      s:on(name, function(_, job) ran[#ran + 1] = job.id end)
      assert.equals(1, s:run{ drain = true })
      assert.same({ other }, ran)
    end)

    it("removes a job scheduled for later", function()
      local name = helper.name("cancel-later")
      local id = helper.schedule(s, name, nil, { delay = 3600 })
      assert.is_true(s:cancel(id))
      assert.equals(0, helper.count_jobs(name))
    end)

    it("returns false the second time", function()
      local id = helper.schedule(s, helper.name("cancel-twice"), nil, { delay = 60 })
      assert.is_true(s:cancel(id))
      assert.is_false(s:cancel(id))
    end)

    it("returns false for an unknown id", function()
      assert.is_false(s:cancel(math.maxinteger))
      assert.is_false(s:cancel(-5))
    end)

    it("returns false for a finished job", function()
      local name = helper.name("cancel-finished")
      local id = helper.schedule(s, name, nil)
      s:on(name, function() end)
      assert.equals(1, s:run{ drain = true })
      assert.is_false(s:cancel(id))
    end)

    it("returns false for a running job, which then completes", function()
      local name = helper.name("cancel-running")
      local id = helper.schedule(s, name, nil)
      local result, finished
      local other = helper.new()
      s:on(name, function(_, job)
        result = table.pack(other:cancel(job.id))
        local own = s:cancel(job.id)
        result.own = own
        finished = true
      end)
      assert.equals(1, s:run{ drain = true })
      assert.is_true(finished)
      assert.is_false(result[1])
      assert.is_false(result.own)
      assert.is_nil(s:job(id))
    end)

    it("works from another instance", function()
      local name = helper.name("cancel-other")
      local id = helper.schedule(s, name, nil, { delay = 60 })
      local other = helper.new()
      assert.is_true(other:cancel(id))
      assert.is_nil(s:job(id))
    end)

    it("raises for an id that is not an integer", function()
      helper.raises(function() s:cancel("1") end)
      helper.raises(function() s:cancel(nil) end)
    end)
  end)

  describe("retry(id)", function()
    it("puts a failed job back to run now", function()
      local name = helper.name("retry")
      local id = failed_job(s, name, 2)
      local failed = helper.ok(s:job(id))
      assert.equals("failed", failed.state)
      assert.equals(2, failed.attempt)
      assert.is_true(helper.contains(failed.last_error, "failing on purpose"), failed.last_error)
      -- failed jobs are not run by a drain
      assert.equals(0, s:run{ drain = true })

      local before = helper.now()
      assert.is_true(s:retry(id))
      local job = helper.ok(s:job(id))
      assert.equals("scheduled", job.state)
      assert.is_true(job.run_at <= helper.now() + 1 and job.run_at >= before - 60,
        ("run_at %.3f is not now (%.3f)"):format(job.run_at, before))

      local ran = 0
      s:on(name, function() ran = ran + 1 end)
      assert.equals(1, s:run{ drain = true })
      assert.equals(1, ran)
      assert.is_nil(s:job(id))
    end)

    it("returns false for a job that is waiting, running, finished or unknown", function()
      local name = helper.name("retry-false")
      local waiting = helper.schedule(s, name, nil, { delay = 60 })
      assert.is_false(s:retry(waiting))
      assert.equals("scheduled", helper.ok(s:job(waiting)).state)

      local running_result
      local run_name = helper.name("retry-running")
      local running = helper.schedule(s, run_name, nil)
      s:on(run_name, function(_, job) running_result = s:retry(job.id) end)
      assert.equals(1, s:run{ drain = true })
      assert.is_false(running_result)
      assert.is_false(s:retry(running)) -- finished now
      assert.is_false(s:retry(math.maxinteger))
    end)

    it("returns false the second time", function()
      local id = failed_job(s, helper.name("retry-twice"), 1)
      assert.is_true(s:retry(id))
      assert.is_false(s:retry(id))
    end)

    it("raises for an id that is not an integer", function()
      helper.raises(function() s:retry("1") end)
      helper.raises(function() s:retry(nil) end)
    end)
  end)

  describe("jobs(filter)", function()
    it("lists waiting, running and failed jobs in run order, with the database clock", function()
      local name, key = helper.name("list"), helper.name("key")
      local t = helper.now() + 120.5
      local later = helper.schedule(s, name, { a = { 1, 2 } }, { at = t, key = key, priority = 2, max_attempts = 4 })
      local failed = failed_job(s, name, 2)
      s:off(name)
      local due = helper.schedule(s, name, "due")
      local rows, now = helper.ok(s:jobs { name = name })
      assert.is_true(math.abs(now - helper.now()) < 5, tostring(now))
      local ids = {}
      for i, j in ipairs(rows) do ids[i] = j.id end
      assert.same({ failed, due, later }, ids) -- run_at order
      local f, l = rows[1], rows[3]
      assert.equals("failed", f.state)
      assert.equals(2, f.attempt)
      assert.equals(2, f.max_attempts)
      assert.same({ fail = true }, f.payload)
      assert.is_true(helper.contains(f.last_error, "failing on purpose"), f.last_error)
      assert.is_nil(f.locked_by)
      assert.is_nil(f.locked_until)
      assert.equals("scheduled", rows[2].state)
      assert.equals("due", rows[2].payload)
      assert.is_nil(rows[2].max_attempts) -- the job sets none: the worker's default applies
      assert.equals(name, l.name)
      assert.same({ a = { 1, 2 } }, l.payload)
      assert.is_true(math.abs(l.run_at - t) < 1e-3)
      assert.equals(0, l.attempt)
      assert.equals(4, l.max_attempts)
      assert.equals(key, l.key)
      assert.equals(2, l.priority)
      assert.is_nil(l.last_error)
      assert.is_true(math.abs(l.created_at - helper.now()) < 60, tostring(l.created_at))

      assert.same({ later }, { helper.ok(s:jobs { name = name, state = "scheduled", limit = 5 })[2].id })
      assert.equals(1, #helper.ok(s:jobs { name = name, state = "failed" }))
      assert.equals(2, #helper.ok(s:jobs { name = name, limit = 2 }))
      local one = helper.ok(s:jobs { id = later })
      assert.equals(1, #one)
      assert.equals(later, one[1].id)
      assert.same({}, helper.ok(s:jobs { name = helper.name("none") }))
      assert.same({}, helper.ok(s:jobs { name = name, id = math.maxinteger }))
    end)

    it("raises for a bad filter", function()
      helper.raises(function() s:jobs { status = "failed" } end, 'unknown option "status"')
      helper.raises(function() s:jobs { state = "finished" } end, "state must be")
      helper.raises(function() s:jobs { name = "" } end, "must not be empty")
      helper.raises(function() s:jobs { id = "1" } end, "must be an integer")
      helper.raises(function() s:jobs { limit = 0 } end, "limit must be between 1")
      helper.raises(function() s:jobs("x") end, "options must be a table")
    end)

    it("lists the job whose stored payload is not JSON, with why and its text #sqlite", function()
      local name = helper.name("list-bad")
      local id = helper.schedule(s, name, nil)
      local fine = helper.schedule(s, name, { ok = 1 }, { delay = 60 })
      helper.sql("UPDATE scheduler.jobs SET payload = '{oops' WHERE id = " .. id)
      local rows = helper.ok(s:jobs { name = name })
      assert.equals(2, #rows)
      assert.equals(id, rows[1].id)
      assert.is_nil(rows[1].payload)
      assert.matches("^invalid JSON at byte 1", rows[1].payload_error)
      assert.equals("{oops", rows[1].payload_text)
      assert.equals(fine, rows[2].id)
      assert.same({ ok = 1 }, rows[2].payload)
      helper.sql("DELETE FROM scheduler.jobs WHERE id = " .. id)
    end)
  end)

  describe("retry_failed(opts)", function()
    it("puts every failed job of a name back to run now, except one whose key is taken", function()
      local name, other = helper.name("retry-all"), helper.name("retry-all-other")
      local key = helper.name("key")
      local a, b = failed_job(s, name, 1), failed_job(s, name, 1)
      local keyed = helper.schedule(s, name, { fail = true }, { key = key, max_attempts = 1 })
      assert.equals(1, s:run{ drain = true })
      assert.equals("failed", helper.ok(s:job(keyed)).state)
      local holder = helper.schedule(s, name, nil, { key = key, delay = 3600 })
      assert.is_true(holder ~= keyed)
      local elsewhere = failed_job(s, other, 1)

      local retried, skipped = s:retry_failed { name = name }
      assert.equals(2, retried)
      assert.equals(1, skipped)
      for _, id in ipairs { a, b } do
        local j = helper.ok(s:job(id))
        assert.equals("scheduled", j.state)
        assert.equals(0, j.attempt)
      end
      assert.equals("failed", helper.ok(s:job(keyed)).state)
      assert.equals("failed", helper.ok(s:job(elsewhere)).state)
      assert.same({ 0, 1 }, { s:retry_failed { name = name } })

      -- without a name: every name
      assert.is_true(s:cancel(holder))
      retried = s:retry_failed()
      assert.is_true(retried >= 2, tostring(retried)) -- keyed and elsewhere, and maybe other specs' jobs
      assert.equals("scheduled", helper.ok(s:job(keyed)).state)
      assert.equals("scheduled", helper.ok(s:job(elsewhere)).state)
      s:off(other)
      s:on(name, function() end)
      assert.equals(3, s:run{ drain = true })
    end)

    it("raises for bad options", function()
      helper.raises(function() s:retry_failed { names = "x" } end, 'unknown option "names"')
      helper.raises(function() s:retry_failed { name = 1 } end, "must be a string")
    end)
  end)

  describe("keys", function()
    it("after the keyed job finished, give a new job", function()
      local name, key = helper.name("key-done"), helper.name("k")
      local id1 = helper.schedule(s, name, 1, { key = key })
      s:on(name, function() end)
      assert.equals(1, s:run{ drain = true })
      local id2 = helper.schedule(s, name, 2, { key = key })
      assert.are_not.equal(id1, id2)
      assert.same(2, helper.ok(s:job(id2)).payload)
    end)

    it("after the keyed job was cancelled, give a new job", function()
      local name, key = helper.name("key-cancel"), helper.name("k")
      local id1 = helper.schedule(s, name, 1, { key = key, delay = 60 })
      assert.is_true(s:cancel(id1))
      local id2 = helper.schedule(s, name, 2, { key = key, delay = 60 })
      assert.are_not.equal(id1, id2)
    end)

    it("while the keyed job runs, return its id", function()
      local name, key = helper.name("key-running"), helper.name("k")
      local id = helper.schedule(s, name, 1, { key = key })
      local again
      s:on(name, function(_, job)
        if job.id == id then again = table.pack(s:schedule(name, 2, { key = key })) end
      end)
      assert.equals(1, s:run{ drain = true })
      assert.equals(id, again[1])
      -- the running job finished; nothing else was created under the key
      assert.equals(0, helper.count_jobs(name))
    end)

    it("while the keyed job waits for a retry, return its id", function()
      local s60 = helper.new{ backoff = function() return 60 end }
      local name, key = helper.name("key-retry"), helper.name("k")
      local id = helper.schedule(s60, name, 1, { key = key })
      s60:on(name, function() error("retry me") end)
      s60:run{ drain = true }
      assert.equals(1, helper.ok(s60:job(id)).attempt)
      assert.equals(id, helper.schedule(s60, name, 2, { key = key }))
    end)
  end)

  describe("the claim #postgresql", function()
    -- index entries read from the jobs table's indexes, as counted so far
    local function index_reads()
      return helper.psql_int("SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes"
        .. " WHERE schemaname = 'scheduler' AND relname = 'jobs'")
    end
    -- the count once the sessions that ended have reported theirs
    local function settled_index_reads()
      local last, now = -1, index_reads()
      while now ~= last do
        helper.sleep(0.3)
        last, now = now, index_reads()
      end
      return now
    end

    it("reads a few index entries per job, with a plan made when the worker's name was rare", function()
      -- The claim is planned once, when the statistics say the worker's
      -- name is rare among the due jobs; then a backlog of it comes.  A
      -- plan that sorts the due jobs of the name would read all of them
      -- at every claim of the drain (quadratic).
      local name, other = helper.name("plan"), helper.name("plan-other")
      local n = 20000
      local runner = helper.new()
      local ran = 0
      runner:on(name, function() ran = ran + 1 end)
      helper.ok(runner:schema_version()) -- the schema exists
      local function insert(who)
        helper.psql(("INSERT INTO scheduler.jobs (name, payload, run_at)"
          .. " SELECT %s, to_jsonb(i), now() - interval '1 minute' FROM generate_series(1, %d) AS i")
          :format(helper.literal(who), n))
      end
      insert(other)
      helper.psql("ANALYZE scheduler.jobs")
      assert.equals(0, runner:run{ drain = true }) -- plans the claim
      helper.psql(("DELETE FROM scheduler.jobs WHERE name = %s"):format(helper.literal(other)))
      insert(name)
      local before = settled_index_reads()
      assert.equals(n, runner:run{ drain = true })
      assert.equals(n, ran)
      runner:close() -- its server process reports its counters as it ends
      local read
      assert.is_truthy(helper.wait_for(function()
        read = index_reads() - before
        return read >= n
      end, 10), "index reads not reported")
      -- a few entries per job: its own, and those of the batch before (the
      -- first scan that meets them after their commit marks them dead)
      assert.is_true(read < 6 * n, ("%d index entries read for %d jobs"):format(read, n))
    end)
  end)

  describe("order", function()
    it("runs due jobs by priority, then run_at, then id", function()
      local a, b = helper.name("order-a"), helper.name("order-b")
      local base = helper.now() - 1000
      local specs = {
        { a, 5, base + 1 },
        { a, 0, base + 3 },
        { b, 0, base + 2 },
        { a, 1, base + 1 },
        { a, 0, base + 2 },
        { b, 10, base + 0 },
        { a, 0, base + 2 },
        { b, 1, base + 1 },
        { a, 0, base + 0.5 },
        { b, 5, base + 0.5 },
        { a, 2, base + 4 },
        { b, 0, base + 2 },
      }
      local jobs = {}
      for i, spec in ipairs(specs) do
        local id = helper.schedule(s, spec[1], i, { at = spec[3], priority = spec[2] })
        jobs[#jobs + 1] = { id = id, priority = spec[2], at = spec[3] }
      end
      table.sort(jobs, function(x, y)
        if x.priority ~= y.priority then return x.priority < y.priority end
        if x.at ~= y.at then return x.at < y.at end
        return x.id < y.id
      end)
      local want = {}
      for i, j in ipairs(jobs) do want[i] = j.id end

      local order = {}
      local function listener(_, job) order[#order + 1] = job.id end
      s:on(a, listener)
      s:on(b, listener)
      assert.equals(#specs, s:run{ drain = true })
      assert.same(want, order)
    end)

    it("runs equal jobs in id order", function()
      local name = helper.name("order-id")
      local t = helper.now() - 10
      local want = {}
      for i = 1, 10 do want[i] = helper.schedule(s, name, i, t) end
      local order = {}
      s:on(name, function(_, job) order[#order + 1] = job.id end)
      assert.equals(10, s:run{ drain = true })
      table.sort(want)
      assert.same(want, order)
    end)

    it("runs jobs in run_at order under run{seconds}", function()
      local name = helper.name("order-time")
      local now = helper.now()
      local want = {}
      want[3] = helper.schedule(s, name, 3, now + 0.6)
      want[1] = helper.schedule(s, name, 1, now + 0.2)
      want[2] = helper.schedule(s, name, 2, now + 0.4)
      local order = {}
      s:on(name, function(payload) order[#order + 1] = payload end)
      assert.is_true(s:run{ seconds = 1.5 })
      assert.same({ 1, 2, 3 }, order)
    end)
  end)
end)
