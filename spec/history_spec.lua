-- History (configure{history}, on(..., {history})): finished jobs (done,
-- failed for good, cancelled) kept for a while, with when their listener
-- started and ended, the worker and the last error; found by job(id),
-- jobs{state=}, and the CLI.  Each case runs on both kinds of worker
-- (concurrency 1: csrc/loop.c; above 1: csrc/fetcher.c), and the listeners
-- keep their own record (what ran, on which attempt) to check history
-- against.
local helper = require "spec.helper"
local cli = require "spec.support.cli_helper"
local cqueues = require "cqueues"
local json = require "dkjson"

-- Jobs kept for job id / of name, counted by SQL (not through the API).
-- A row keeps a write's jobs (a batch's) as a JSON array of arrays
-- [id, name, ...].
local function kept_where(field, value)
  if helper.POSTGRESQL then
    return helper.psql_int(("SELECT count(*) FROM scheduler.history h,"
      .. " json_array_elements(h.jobs::json) e WHERE e->>%d = %s"):format(field, helper.literal(value)))
  end
  return helper.sql_int(("SELECT count(*) FROM scheduler_history h, json_each(h.jobs) e"
    .. " WHERE json_extract(e.value, '$[%d]') = %s"):format(field,
      type(value) == "number" and tostring(value) or helper.literal(value)))
end
local function kept_rows(id) return kept_where(0, helper.POSTGRESQL and tostring(id) or id) end
local function kept_of(name) return kept_where(1, name) end

-- Run the worker until no job of `names` waits or runs: a drain at
-- concurrency 1, a cqueues loop above.
local function work(s, concurrency, names)
  if concurrency == 1 then
    helper.ok(s:run { drain = true })
    return
  end
  local list = {}
  for i, n in ipairs(names) do list[i] = helper.literal(n) end
  local left = ("SELECT count(*) FROM scheduler.jobs WHERE state <> 'failed' AND name IN (%s)")
    :format(table.concat(list, ", "))
  local cq = cqueues.new()
  require("scheduler.cqueues").attach(s, cq)
  cq:wrap(function()
    local deadline = cqueues.monotime() + 30
    while helper.sql_int(left) > 0 and cqueues.monotime() < deadline do cqueues.sleep(0.05) end
    s:stop()
  end)
  assert(cq:loop())
end

local function contains(rows, id)
  for _, r in ipairs(rows) do if r.id == id then return r end end
  return nil
end

for _, concurrency in ipairs { 1, 4 } do
  describe(("history (concurrency %d)"):format(concurrency), function()
    after_each(function() helper.cleanup() end)

    it("keeps a done, a failed and a cancelled job with their fields, each once", function()
      local ok, flaky, bad = helper.name("hist_ok"), helper.name("hist_flaky"), helper.name("hist_bad")
      local worker = helper.name("hist-worker")
      local s = helper.new { history = "1h", concurrency = concurrency, worker_id = worker,
        max_attempts = 2, backoff = function() return 0 end }
      local ran = {} -- the listeners' own record: id -> attempts seen
      local function note(job)
        ran[job.id] = ran[job.id] or {}
        table.insert(ran[job.id], job.attempt)
      end
      s:on(ok, function(_, job) note(job) end)
      s:on(flaky, function(_, job)
        note(job)
        if job.attempt == 1 then error("flaky once") end
      end)
      s:on(bad, function(_, job)
        note(job)
        error("bad 7")
      end)
      local before = helper.now()
      local a = helper.ok(s:schedule(ok, { n = 1 }, { key = helper.name("k") }))
      local f = helper.ok(s:schedule(flaky, "x"))
      local b = helper.ok(s:schedule(bad, "y"))
      local c = helper.ok(s:schedule(ok, { n = 2 }, { delay = 3600 }))
      assert.is_true(s:cancel(c))
      work(s, concurrency, { ok, flaky, bad })
      local after = helper.now()

      -- the listeners ran each job as expected (independent record)
      assert.are.same({ 1 }, ran[a])
      assert.are.same({ 1, 2 }, ran[f])
      assert.are.same({ 1, 2 }, ran[b])
      assert.is_nil(ran[c])

      local j = helper.ok(s:job(a))
      assert.are.equal("done", j.state)
      assert.are.equal(ok, j.name)
      assert.are.same({ n = 1 }, j.payload)
      assert.is_string(j.key)
      assert.are.equal(1, j.attempt)
      assert.are.equal(worker, j.worker)
      assert.is_true(j.started_at >= before - helper.SLACK and j.started_at <= after + helper.SLACK)
      assert.is_true(j.finished_at >= j.started_at)
      assert.is_true(math.abs(j.finished_at - j.started_at - j.duration) < 1e-3)
      assert.is_true(math.abs(j.kept_until - (after + 3600)) < 60, "kept about an hour")

      -- retried once, then done: one row, its second attempt, the error of the first
      local jf = helper.ok(s:job(f))
      assert.are.equal("done", jf.state)
      assert.are.equal(2, jf.attempt)
      assert.matches("flaky once", jf.last_error)
      assert.are.equal(worker, jf.worker)
      assert.are.equal(1, kept_rows(f))

      -- failed for good: still in the queue (retry works), with its last run
      local jb = helper.ok(s:job(b))
      assert.are.equal("failed", jb.state)
      assert.are.equal(2, jb.attempt)
      assert.matches("bad 7", jb.last_error)
      assert.are.equal(worker, jb.worker)
      assert.is_number(jb.started_at)
      assert.is_number(jb.duration)
      assert.are.equal(1, kept_rows(b))
      assert.are.equal("failed", helper.ok(s:jobs { state = "failed", name = bad })[1].state)

      -- cancelled before it ran: no worker, never started, its attempt 0
      local jc = helper.ok(s:job(c))
      assert.are.equal("cancelled", jc.state)
      assert.are.equal(0, jc.attempt)
      assert.is_nil(jc.worker)
      assert.is_nil(jc.started_at)
      assert.are.same({ n = 2 }, jc.payload)

      local done = helper.ok(s:jobs { state = "done", name = ok })
      assert.are.equal(1, #done)
      assert.are.equal(a, done[1].id)
      assert.is_truthy(contains(helper.ok(s:jobs { state = "done", name = flaky }), f))
      local cancelled = helper.ok(s:jobs { state = "cancelled", name = ok })
      assert.are.equal(1, #cancelled)
      assert.are.equal(c, cancelled[1].id)
      assert.are.equal(0, #helper.ok(s:jobs { state = "done", name = bad }))
    end)

    it("keeps every job of a long drain once (many batches, claimed ahead on PostgreSQL)", function()
      local name = helper.name("hist_many")
      local s = helper.new { concurrency = concurrency, history = "1h" }
      local ran = {}
      s:on(name, function(_, job) ran[job.id] = (ran[job.id] or 0) + 1 end)
      local list = {}
      local n = concurrency == 1 and 3000 or 500
      for i = 1, n do list[i] = { name, i } end
      local ids = helper.ok(s:schedule_many(list))
      work(s, concurrency, { name })
      assert.are.equal(n, kept_of(name))
      local done = helper.ok(s:jobs { state = "done", name = name })
      assert.are.equal(n, #done)
      local seen = {}
      for _, j in ipairs(done) do
        assert.is_nil(seen[j.id], "job " .. j.id .. " kept once")
        seen[j.id] = true
        assert.are.equal(1, ran[j.id])
        assert.are.equal(1, j.attempt)
      end
      for _, id in ipairs(ids) do assert.is_true(seen[id], "job " .. id .. " kept") end
      assert.are.equal(ids[n // 2], helper.ok(s:job(ids[n // 2])).id)
    end)

    it("keeps nothing when it is off: job(id) is nil after success, as without history", function()
      local name = helper.name("hist_off")
      local s = helper.new { concurrency = concurrency, max_attempts = 1 }
      local count = 0
      s:on(name, function(p) count = count + 1; if p == "fail" then error("no") end end)
      local a = helper.ok(s:schedule(name, "fine"))
      local b = helper.ok(s:schedule(name, "fail"))
      local c = helper.ok(s:schedule(name, nil, { delay = 3600 }))
      assert.is_true(s:cancel(c))
      work(s, concurrency, { name })
      assert.are.equal(2, count)
      assert.is_nil(s:job(a))
      assert.is_nil(s:job(c))
      local jb = helper.ok(s:job(b))
      assert.are.equal("failed", jb.state)
      assert.is_nil(jb.worker)
      assert.are.equal(0, kept_of(name))
      assert.are.equal(0, #helper.ok(s:jobs { state = "done", name = name }))
    end)

    it("takes a name's own setting over the instance's", function()
      local kept, dropped = helper.name("hist_kept"), helper.name("hist_dropped")
      local other = helper.name("hist_other")
      -- instance off, one name on
      local s = helper.new { concurrency = concurrency }
      s:on(kept, function() end, { history = "1h" })
      s:on(other, function() end)
      local a = helper.ok(s:schedule(kept, 1))
      local b = helper.ok(s:schedule(other, 1))
      work(s, concurrency, { kept, other })
      assert.are.equal("done", helper.ok(s:job(a)).state)
      assert.is_nil(s:job(b))
      -- instance on, one name off ("0" and false both mean none)
      local t = helper.new { concurrency = concurrency, history = 3600 }
      t:on(dropped, function() end, { history = false })
      t:on(other, function() end, { history = "0" })
      t:on(kept, function() end)
      local c = helper.ok(t:schedule(dropped, 1))
      local d = helper.ok(t:schedule(other, 1))
      local e = helper.ok(t:schedule(kept, 1))
      work(t, concurrency, { dropped, other, kept })
      assert.is_nil(t:job(c))
      assert.is_nil(t:job(d))
      assert.are.equal("done", helper.ok(t:job(e)).state)
      assert.are.equal(0, kept_of(dropped))
      assert.are.equal(0, kept_of(other))
      assert.are.equal(2, kept_of(kept))
    end)

    it("prunes only the rows whose time is up, a worker on its own too", function()
      local short, long = helper.name("hist_short"), helper.name("hist_long")
      local s = helper.new { concurrency = concurrency, history = "1h" }
      s:on(short, function() end)
      s:on(long, function() end)
      -- one write each (PostgreSQL keeps a write's jobs in one row)
      for i = 1, 2 do
        helper.ok(s:schedule(short, i))
        work(s, concurrency, { short })
      end
      for i = 1, 3 do helper.ok(s:schedule(long, i)) end
      work(s, concurrency, { long })
      assert.are.equal(2, kept_of(short))
      assert.are.equal(3, kept_of(long))
      assert.are.equal(2, #helper.ok(s:jobs { state = "done", name = short }))
      -- the short ones' time is up (moved back by SQL: no waiting)
      if helper.POSTGRESQL then
        helper.psql("UPDATE scheduler.history h SET finished_at = finished_at - interval '2 hours',"
          .. " kept_until = now() - interval '1 hour' WHERE EXISTS (SELECT 1 FROM"
          .. " json_array_elements(h.jobs::json) e WHERE e->>1 = " .. helper.literal(short) .. ")")
      else
        helper.sql(("UPDATE scheduler_history SET finished_at = finished_at - 7200, kept_until = %f"
          .. " WHERE EXISTS (SELECT 1 FROM json_each(jobs) e WHERE json_extract(e.value, '$[1]') = %s)")
          :format(helper.now() - 3600, helper.literal(short)))
      end
      -- expired: no longer found, even before it is pruned
      assert.are.equal(0, #helper.ok(s:jobs { state = "done", name = short }))
      assert.are.equal(3, #helper.ok(s:jobs { state = "done", name = long }))
      -- at most the limit, one short transaction
      assert.are.equal(1, helper.ok(s:prune_history(1)))
      assert.are.equal(1, kept_of(short))
      -- a worker with history on prunes when it starts
      local t = helper.new { concurrency = concurrency, history = "1h" }
      t:on(long, function() end)
      work(t, concurrency, { long })
      assert.are.equal(0, kept_of(short))
      assert.are.equal(3, kept_of(long))
    end)
  end)
end

describe("history in the CLI", function()
  after_each(function()
    cli.cleanup()
    helper.cleanup()
  end)

  it("shows a done and a cancelled job, and lists them by state", function()
    local name = helper.name("hist_cli")
    local s = helper.new { history = "1d", worker_id = "cli-hist-worker" }
    s:on(name, function() end)
    local a = helper.ok(s:schedule(name, { "<b>" }))
    local c = helper.ok(s:schedule(name, 2, { delay = 3600 }))
    assert.is_true(s:cancel(c))
    helper.ok(s:run { drain = true })

    local r = cli.exec { "show", tostring(a) }
    assert.are.equal(0, r.code, cli.describe(r))
    assert.matches("state%s+done", r.out)
    assert.matches("worker%s+cli%-hist%-worker", r.out)
    r = cli.exec { "show", tostring(c), "--json" }
    assert.are.equal(0, r.code, cli.describe(r))
    local v = json.decode(r.out)
    assert.are.equal("cancelled", v.state)
    assert.are.equal(c, v.id)
    r = cli.exec { "jobs", "--state", "done", "--name", name, "--json" }
    assert.are.equal(0, r.code, cli.describe(r))
    v = json.decode(r.out)
    assert.are.equal(1, #v)
    assert.are.equal(a, v[1].id)
    assert.are.equal("cli-hist-worker", v[1].worker)
    r = cli.exec { "jobs", "--state", "cancelled", "--name", name }
    assert.are.equal(0, r.code, cli.describe(r))
    assert.matches(name, r.out, 1, true)
  end)
end)
