-- schedule(): ids, durability, `when` forms, keys, validation, the SQL
-- function, the module-level default instance and now().
local helper = require "spec.helper"
local scheduler = require "scheduler"

local literal = helper.literal

describe("schedule", function()
  local s
  before_each(function() s = helper.new() end)
  after_each(helper.cleanup)

  it("returns an integer id only once the job is committed", function()
    local name = helper.name("commit")
    local id, err = s:schedule(name, { n = 1 })
    assert.is_nil(err)
    assert.equals("integer", math.type(id))
    assert.is_true(id > 0)
    -- another connection sees the row at once
    assert.equals(1, helper.sql_int(("SELECT count(*) FROM scheduler.jobs WHERE id = %d AND name = %s")
      :format(id, literal(name))))
    local job = helper.ok(s:job(id))
    assert.equals(id, job.id)
    assert.equals(name, job.name)
    assert.equals("scheduled", job.state)
    assert.same({ n = 1 }, job.payload)
  end)

  it("gives every job its own id", function()
    local name = helper.name("ids")
    local seen = {}
    for i = 1, 20 do
      local id = helper.schedule(s, name, i)
      assert.is_nil(seen[id], "duplicate id " .. id)
      seen[id] = true
    end
    assert.equals(20, helper.count_jobs(name))
  end)

  it("schedules for now when `when` is nil", function()
    local name = helper.name("now")
    local before = helper.now()
    local id = helper.schedule(s, name, "x")
    local after = helper.now()
    local job = helper.ok(s:job(id))
    assert.equals("float", math.type(job.run_at))
    assert.is_true(job.run_at >= before - 1 and job.run_at <= after + 1,
      ("run_at %.3f not within [%.3f, %.3f]"):format(job.run_at, before, after))
    local ran = {}
    s:on(name, function(payload, j) ran[#ran + 1] = j.id end)
    assert.equals(1, s:run{ drain = true })
    assert.same({ id }, ran)
  end)

  it("takes an absolute Unix time in whole seconds", function()
    local t = os.time() + 60
    local id = helper.schedule(s, helper.name("abs"), nil, t)
    local job = helper.ok(s:job(id))
    assert.equals("float", math.type(job.run_at))
    assert.is_true(math.abs(job.run_at - t) < 1e-3, ("run_at %.6f, want %d"):format(job.run_at, t))
  end)

  it("takes an absolute Unix time with a fraction", function()
    local t = helper.now() + 0.25
    local id = helper.schedule(s, helper.name("frac"), nil, t)
    local job = helper.ok(s:job(id))
    assert.is_true(math.abs(job.run_at - t) < 1e-3, ("run_at %.6f, want %.6f"):format(job.run_at, t))
  end)

  it("takes { at = t }", function()
    local t = helper.now() + 3600.5
    local id = helper.schedule(s, helper.name("at"), nil, { at = t })
    assert.is_true(math.abs(helper.ok(s:job(id)).run_at - t) < 1e-3)
  end)

  it("takes { delay = seconds }", function()
    local before = helper.now()
    local id = helper.schedule(s, helper.name("delay"), nil, { delay = 60 })
    local after = helper.now()
    local run_at = helper.ok(s:job(id)).run_at
    assert.is_true(run_at >= before + 60 - 1 and run_at <= after + 60 + 1,
      ("run_at %.3f, want about %.3f"):format(run_at, before + 60))
  end)

  it("takes a fractional delay", function()
    local before = helper.now()
    local id = helper.schedule(s, helper.name("delay"), nil, { delay = 0.5 })
    local run_at = helper.ok(s:job(id)).run_at
    assert.is_true(run_at >= before + 0.5 - 0.05 and run_at <= helper.now() + 0.5 + 0.05,
      ("run_at %.3f, want about %.3f"):format(run_at, before + 0.5))
  end)

  it("schedules a table without at/delay for now", function()
    local before = helper.now()
    local id = helper.schedule(s, helper.name("nowtable"), nil, { priority = 3 })
    local job = helper.ok(s:job(id))
    assert.is_true(job.run_at <= helper.now() + 1 and job.run_at >= before - 1)
    assert.equals(3, job.priority)
  end)

  it("accepts a time in the past and runs the job now", function()
    local name = helper.name("past")
    local id1 = helper.schedule(s, name, 1, helper.now() - 3600)
    local id2 = helper.schedule(s, name, 2, { at = 0 })
    local id3 = helper.schedule(s, name, 3, { delay = -30 })
    local ran = {}
    s:on(name, function(payload, job) ran[job.id] = payload end)
    assert.equals(3, s:run{ drain = true })
    assert.same({ [id1] = 1, [id2] = 2, [id3] = 3 }, ran)
  end)

  it("stores priority, max_attempts and key from the `when` table", function()
    local key = helper.name("key")
    local id = helper.schedule(s, helper.name("opts"), nil,
      { delay = 60, priority = 7, max_attempts = 3, key = key })
    local job = helper.ok(s:job(id))
    assert.equals(7, job.priority)
    assert.equals(3, job.max_attempts)
    assert.equals(key, job.key)
  end)

  it("defaults to priority 0, no key, no error and no attempt yet", function()
    local id = helper.schedule(s, helper.name("defaults"), nil, { delay = 60 })
    local job = helper.ok(s:job(id))
    assert.equals(0, job.priority)
    assert.is_nil(job.key)
    assert.is_nil(job.last_error)
    assert.equals(0, job.attempt)
  end)

  describe("with a key", function()
    it("returns the existing job's id and leaves that job unchanged", function()
      local name, key = helper.name("key"), helper.name("k")
      local t = helper.now() + 600
      local id1 = helper.schedule(s, name, { first = true }, { at = t, key = key })
      local id2 = helper.schedule(s, name, { second = true }, { delay = 5, key = key })
      local id3 = helper.schedule(s, name, nil, { key = key, priority = 9 })
      assert.equals(id1, id2)
      assert.equals(id1, id3)
      assert.equals(1, helper.count_jobs(name))
      local job = helper.ok(s:job(id1))
      assert.same({ first = true }, job.payload)
      assert.is_true(math.abs(job.run_at - t) < 1e-3)
      assert.equals(0, job.priority)
    end)

    it("returns the same id to another instance", function()
      local s2 = helper.new()
      local name, key = helper.name("key2"), helper.name("k")
      local id1 = helper.schedule(s, name, 1, { delay = 60, key = key })
      local id2 = helper.schedule(s2, name, 2, { delay = 60, key = key })
      assert.equals(id1, id2)
    end)

    it("gives different keys different jobs", function()
      local name = helper.name("keys")
      local id1 = helper.schedule(s, name, 1, { delay = 60, key = helper.name("a") })
      local id2 = helper.schedule(s, name, 2, { delay = 60, key = helper.name("b") })
      assert.are_not.equal(id1, id2)
      assert.equals(2, helper.count_jobs(name))
    end)
  end)

  describe("stores names verbatim", function()
    local names = {
      quotes = [[it's a "name" with `quotes`]],
      sql = [['); DROP TABLE scheduler.jobs; -- ]],
      backslash = [[back\slash \' \" \\ \n]],
      unicode = "Ünïcødé 名前 🚀",
      percent = "100% $1 $$ %s ?",
    }
    for label, base in pairs(names) do
      it("(" .. label .. ")", function()
        local name = base .. " " .. helper.name("v")
        local id = helper.schedule(s, name, { label = label })
        assert.equals(name, helper.ok(s:job(id)).name)
        assert.equals(1, helper.count_jobs(name))
        local got
        s:on(name, function(payload, job) got = { payload = payload, name = job.name } end)
        assert.equals(1, s:run{ drain = true })
        assert.same({ payload = { label = label }, name = name }, got)
      end)
    end

    it("(1 MB) or refuses it cleanly", function()
      local name = helper.name("big") .. string.rep("n", 2 ^ 20)
      local ok, id, err = pcall(s.schedule, s, name, nil)
      assert.is_true(ok, "schedule raised: " .. tostring(id))
      if id ~= nil then
        assert.equals(name, helper.ok(s:job(id)).name)
      else
        helper.runtime_error(id, err, "1 MB name")
        assert.equals(0, helper.count_jobs(name))
      end
    end)

    it("(NUL) or refuses it with nil, err and no row", function()
      local prefix = helper.name("nul")
      local name = prefix .. "\0after"
      local ok, id, err = pcall(s.schedule, s, name, nil)
      assert.is_true(ok, "schedule raised: " .. tostring(id))
      if id ~= nil then
        assert.equals(name, helper.ok(s:job(id)).name)
      else
        helper.runtime_error(id, err, "NUL in name")
        assert.equals(0, helper.sql_int("SELECT count(*) FROM scheduler.jobs WHERE name LIKE "
          .. literal(prefix .. "%")))
      end
    end)
  end)

  describe("stores keys verbatim", function()
    it("(quotes, SQL, unicode)", function()
      local key = [[k'e"y\ '); DELETE FROM scheduler.jobs; -- ü ]] .. helper.name("k")
      local name = helper.name("vkey")
      local id = helper.schedule(s, name, nil, { delay = 60, key = key })
      assert.equals(key, helper.ok(s:job(id)).key)
      assert.equals(id, helper.schedule(s, name, nil, { delay = 60, key = key }))
    end)

    it("(1 MB) or refuses it cleanly", function()
      local key = helper.name("k") .. string.rep("k", 2 ^ 20)
      local name = helper.name("bigkey")
      local ok, id, err = pcall(s.schedule, s, name, nil, { delay = 60, key = key })
      assert.is_true(ok, "schedule raised: " .. tostring(id))
      if id ~= nil then
        assert.equals(key, helper.ok(s:job(id)).key)
      else
        helper.runtime_error(id, err, "1 MB key")
        assert.equals(0, helper.count_jobs(name))
      end
    end)

    it("(NUL) or refuses it with nil, err and no row", function()
      local name = helper.name("nulkey")
      local ok, id, err = pcall(s.schedule, s, name, nil, { key = "a\0b" })
      assert.is_true(ok, "schedule raised: " .. tostring(id))
      if id ~= nil then
        assert.equals("a\0b", helper.ok(s:job(id)).key)
      else
        helper.runtime_error(id, err, "NUL in key")
        assert.equals(0, helper.count_jobs(name))
      end
    end)
  end)

  describe("raises on bad input", function()
    local name
    before_each(function() name = helper.name("bad") end)
    after_each(function()
      -- nothing half-written
      assert.equals(0, helper.count_jobs(name))
    end)

    it("an empty name", function()
      helper.raises(function() s:schedule("", nil) end)
    end)

    it("a non-string name", function()
      helper.raises(function() s:schedule(nil, nil) end)
      helper.raises(function() s:schedule(42, nil) end)
      helper.raises(function() s:schedule({}, nil) end)
      helper.raises(function() s:schedule(true, nil) end)
      helper.raises(function() s:schedule(print, nil) end)
    end)

    it("a `when` of the wrong type", function()
      helper.raises(function() s:schedule(name, nil, "soon") end)
      helper.raises(function() s:schedule(name, nil, true) end)
      helper.raises(function() s:schedule(name, nil, print) end)
    end)

    it("a NaN or infinite time", function()
      local nan, inf = 0 / 0, math.huge
      helper.raises(function() s:schedule(name, nil, nan) end)
      helper.raises(function() s:schedule(name, nil, inf) end)
      helper.raises(function() s:schedule(name, nil, -inf) end)
      helper.raises(function() s:schedule(name, nil, { at = nan }) end)
      helper.raises(function() s:schedule(name, nil, { at = inf }) end)
      helper.raises(function() s:schedule(name, nil, { delay = nan }) end)
      helper.raises(function() s:schedule(name, nil, { delay = inf }) end)
    end)

    it("an `at` or `delay` that is not a number", function()
      helper.raises(function() s:schedule(name, nil, { at = "tomorrow" }) end)
      helper.raises(function() s:schedule(name, nil, { delay = "5" }) end)
    end)

    it("an unknown option in the `when` table, naming it", function()
      helper.raises(function() s:schedule(name, nil, { dealy = 5 }) end, "dealy")
      helper.raises(function() s:schedule(name, nil, { prio = 1 }) end, "prio")
    end)

    it("a negative or non-integer priority", function()
      helper.raises(function() s:schedule(name, nil, { priority = -1 }) end)
      helper.raises(function() s:schedule(name, nil, { priority = 1.5 }) end)
      helper.raises(function() s:schedule(name, nil, { priority = "high" }) end)
    end)

    it("max_attempts below 1 or not an integer", function()
      helper.raises(function() s:schedule(name, nil, { max_attempts = 0 }) end)
      helper.raises(function() s:schedule(name, nil, { max_attempts = -3 }) end)
      helper.raises(function() s:schedule(name, nil, { max_attempts = 2.5 }) end)
      helper.raises(function() s:schedule(name, nil, { max_attempts = "3" }) end)
    end)

    it("a key that is not a string", function()
      helper.raises(function() s:schedule(name, nil, { key = 42 }) end)
      helper.raises(function() s:schedule(name, nil, { key = {} }) end)
    end)
  end)

  -- PostgreSQL only: SQLite has no server-side function (programs that share
  -- the file schedule through this library, or insert rows directly)
  describe("the SQL function scheduler.schedule #postgresql", function()
    it("creates a job the API sees and runs", function()
      local name = helper.name("sql")
      local id = helper.psql_int(("SELECT scheduler.schedule(%s, %s::jsonb)")
        :format(literal(name), literal('{"a":1,"s":"x\'y"}')))
      local job = helper.ok(s:job(id))
      assert.equals(name, job.name)
      assert.equals("scheduled", job.state)
      assert.same({ a = 1, s = "x'y" }, job.payload)
      local got
      s:on(name, function(payload, j) got = { payload = payload, id = j.id, attempt = j.attempt } end)
      assert.equals(1, s:run{ drain = true })
      assert.same({ payload = { a = 1, s = "x'y" }, id = id, attempt = 1 }, got)
      assert.equals("integer", math.type(got.payload.a))
      assert.is_nil(s:job(id))
    end)

    it("takes a run_at", function()
      local name = helper.name("sqlat")
      local id = helper.psql_int(("SELECT scheduler.schedule(%s, 'null'::jsonb, now() + interval '1 hour')")
        :format(literal(name)))
      local job = helper.ok(s:job(id))
      assert.is_nil(job.payload)
      assert.is_true(math.abs(job.run_at - (helper.now() + 3600)) < 5)
      s:on(name, function() end)
      assert.equals(0, s:run{ drain = true })
    end)
  end)
end)

describe("the default instance (module-level functions)", function()
  setup(function()
    scheduler.configure{ database = helper.DATABASE, log = false }
  end)
  teardown(function()
    -- configure() closes the previous default instance: do not leave an
    -- idle connection behind for the rest of the suite
    scheduler.configure{ database = helper.DATABASE, log = false }
  end)
  after_each(helper.cleanup)

  it("schedules, inspects, runs and removes listeners", function()
    local name = helper.name("default")
    local id = assert(scheduler.schedule(name, { to = "a@b.c" }))
    assert.equals("integer", math.type(id))
    local job = helper.ok(scheduler.job(id))
    assert.equals(name, job.name)
    assert.same({ to = "a@b.c" }, job.payload)
    local got = {}
    scheduler.on(name, function(payload, j) got[#got + 1] = { payload.to, j.id } end)
    assert.equals(1, scheduler.run{ drain = true })
    assert.same({ { "a@b.c", id } }, got)
    assert.is_nil(scheduler.job(id))
    scheduler.off(name)
    assert(scheduler.schedule(name, nil))
    assert.equals(0, scheduler.run{ drain = true })
  end)

  it("cancels and retries", function()
    local name = helper.name("default-cancel")
    local id = assert(scheduler.schedule(name, nil, { delay = 60 }))
    assert.is_true(scheduler.cancel(id))
    assert.is_false(scheduler.cancel(id))
    assert.is_false(scheduler.retry(id))
  end)

  it("shares the database with other instances", function()
    local s = helper.new()
    local name = helper.name("shared")
    local id = assert(scheduler.schedule(name, 1, { delay = 60 }))
    assert.equals(name, helper.ok(s:job(id)).name)
    assert.is_true(s:cancel(id))
    assert.is_nil(scheduler.job(id))
  end)

  it("runs for a number of seconds and stops from a listener", function()
    local name = helper.name("default-stop")
    assert(scheduler.schedule(name, nil))
    local ran = 0
    scheduler.on(name, function() ran = ran + 1; scheduler.stop() end)
    local elapsed, ok = helper.timed(scheduler.run, { seconds = 10 })
    scheduler.off(name)
    assert.is_true(ok)
    assert.equals(1, ran)
    assert.is_true(elapsed < 5, "stop() did not end run: " .. elapsed)
  end)
end)

describe("now()", function()
  it("returns a float close to the wall clock", function()
    local t = scheduler.now()
    assert.equals("float", math.type(t))
    assert.is_true(math.abs(t - os.time()) <= 2)
    assert.is_true(math.abs(t - helper.now()) < 0.1)
  end)

  it("has sub-millisecond precision", function()
    local fractional = false
    local prev = scheduler.now()
    for _ = 1, 50 do
      local t = scheduler.now()
      assert.is_true(t >= prev - 0.01, "now() went backwards")
      local ms = t * 1000
      if math.abs(ms - math.floor(ms + 0.5)) > 1e-3 then fractional = true end
      prev = t
    end
    assert.is_true(fractional, "now() looks rounded to whole milliseconds")
    -- it advances with time
    local a = scheduler.now()
    helper.sleep(0.02)
    local b = scheduler.now()
    assert.is_true(b - a >= 0.015 and b - a < 1, ("advanced %.6f"):format(b - a))
  end)
end)
