-- Configuration checking, use after close, <close>, connection leaks, an
-- unreachable database, and credentials never showing in errors or logs.
local helper = require "spec.helper"
local scheduler = require "scheduler"

-- Every operation on an instance, called with valid arguments.
local function operations(name)
  return {
    schedule = function(s) return s:schedule(name, { x = 1 }) end,
    job = function(s) return s:job(1) end,
    cancel = function(s) return s:cancel(1) end,
    retry = function(s) return s:retry(1) end,
    on = function(s) return s:on(name, function() end) end,
    off = function(s) return s:off(name) end,
    run_drain = function(s) return s:run{ drain = true } end,
    run_seconds = function(s) return s:run{ seconds = 0.1 } end,
  }
end

-- A log function that keeps what it is given.
local function collecting_log()
  local entries = {}
  local function log(level, message)
    entries[#entries + 1] = { level = level, message = message }
  end
  return log, entries
end

local function assert_no_secret(secret, where, text)
  if type(text) == "string" and text:find(secret, 1, true) then
    error(("the password appears in %s: %q"):format(where, text), 2)
  end
end

local function assert_log_clean(secret, entries)
  for _, e in ipairs(entries) do
    assert.equals("string", type(e.level))
    assert.equals("string", type(e.message))
    assert_no_secret(secret, "a log message", e.message)
    assert_no_secret(secret, "a log level", e.level)
  end
end

describe("errors", function()
  after_each(helper.cleanup)

  describe("configuration", function()
    it("new() raises for an unknown option, naming it", function()
      helper.raises(function() scheduler.new{ database = helper.DATABASE, no_such_option = 1 } end,
        "no_such_option")
    end)

    it("configure() raises for an unknown option, naming it", function()
      helper.raises(function() scheduler.configure{ databse = helper.DATABASE } end, "databse")
    end)

    it("new() raises for options of the wrong type or out of range", function()
      local db = helper.DATABASE
      local bad = {
        { database = 42 },
        { database = {} },
        { lease = "30" },
        { lease = 0 },
        { lease = -1 },
        { lease = 0 / 0 },
        { max_attempts = 0 },
        { max_attempts = -1 },
        { max_attempts = 2.5 },
        { max_attempts = "3" },
        { backoff = 5 },
        { backoff = "exponential" },
        { log = 42 },
        { log = true },
        { worker_id = 42 },
        { batch_max = 0 },
        { batch_max = 2.5 },
        { batch_max = "500" },
        { batch_max = 100001 },
      }
      for _, opts in ipairs(bad) do
        if opts.database == nil then opts.database = db end
        local k = next(opts) == "database" and next(opts, "database") or next(opts)
        local ok = pcall(scheduler.new, opts)
        assert.is_false(ok, "accepted " .. tostring(k) .. " = " .. tostring(opts[k]))
      end
    end)

    it("new() raises for a non-table argument", function()
      helper.raises(function() scheduler.new("host=/tmp") end)
      helper.raises(function() scheduler.new(42) end)
    end)

    it("new() accepts every documented option", function()
      local log = collecting_log()
      local s = helper.new{
        database = helper.DATABASE,
        worker_id = "spec-" .. helper.name("w"),
        lease = 2.5,
        max_attempts = 3,
        backoff = function(attempt) return attempt end,
        log = log,
        timeout = 5,
        batch_max = 50,
      }
      helper.schedule(s, helper.name("all-options"), nil, { delay = 60 })
      local s2 = helper.new{ log = false }
      helper.schedule(s2, helper.name("no-log"), nil, { delay = 60 })
    end)

    it("reads the database from LUA_SCHEDULER_DATABASE by default", function()
      local s = scheduler.new{ log = false }
      helper.instances[#helper.instances + 1] = s
      local name = helper.name("env-default")
      local id = helper.schedule(s, name, nil, { delay = 60 })
      assert.equals(1, helper.count_jobs(name))
      assert.equals(name, helper.ok(s:job(id)).name)
    end)

    for _, scheme in ipairs({ "postgresql", "postgres" }) do
      it("takes a " .. scheme .. ":// URL #postgresql", function()
        local s = helper.new{ database = helper.socket_url(scheme) }
        local name = helper.name("url")
        helper.schedule(s, name, nil, { delay = 60 })
        assert.equals(1, helper.count_jobs(name))
      end)
    end
  end)

  describe("after close()", function()
    it("every operation raises", function()
      local name = helper.name("closed")
      for op, call in pairs(operations(name)) do
        local s = helper.new()
        helper.schedule(s, name, nil, { delay = 60 }) -- really connected
        s:close()
        local ok, err = pcall(call, s)
        assert.is_false(ok, op .. " after close() did not raise")
        assert.is_truthy(tostring(err):lower():find("close", 1, true),
          op .. ": error does not mention the instance is closed: " .. tostring(err))
      end
    end)

    it("a second close() is harmless", function()
      local s = helper.new()
      s:close()
      s:close()
    end)

    it("closing an instance that never connected is harmless", function()
      local s = helper.new()
      s:close()
    end)

    it("<close> closes the instance at the end of the block", function()
      local escaped
      do
        local s <close> = scheduler.new{ database = helper.DATABASE, log = false }
        helper.schedule(s, helper.name("tbc"), nil, { delay = 60 })
        escaped = s
      end
      helper.raises(function() escaped:schedule(helper.name("tbc"), nil) end)
      escaped:close()
    end)

    it("<close> closes the instance when the block raises", function()
      local escaped
      local ok = pcall(function()
        local s <close> = scheduler.new{ database = helper.DATABASE, log = false }
        escaped = s
        error("leaving the block")
      end)
      assert.is_false(ok)
      helper.raises(function() escaped:job(1) end)
    end)
  end)

  -- server connections (pg_stat_activity); the SQLite equivalent, no open
  -- file left behind, is in sqlite_spec
  describe("connections #postgresql", function()
    it("are all returned by close()", function()
      local baseline = helper.settled_connections()
      local instances = {}
      for i = 1, 3 do
        local s = helper.new()
        local name = helper.name("conn")
        local id = helper.schedule(s, name, i)
        s:on(name, function() end)
        assert.equals(1, s:run{ drain = true })
        assert.is_nil(s:job(id))
        instances[i] = s
      end
      local open = helper.count_connections()
      assert.is_true(open >= baseline + 3,
        ("%d lua-scheduler connections with 3 instances open, %d before: is application_name set?"):format(open, baseline))
      for _, s in ipairs(instances) do s:close() end
      local back = helper.wait_for(function() return helper.count_connections() == baseline end, 5)
      assert.is_true(back, ("%d connections after close, %d before"):format(helper.count_connections(), baseline))
    end)

    it("are returned by <close>, also after run{seconds} and failures", function()
      local baseline = helper.settled_connections()
      do
        local s <close> = scheduler.new{ database = helper.DATABASE, log = false, backoff = function() return 60 end }
        local name = helper.name("conn-close")
        helper.schedule(s, name, nil)
        s:on(name, function() error("fail") end)
        assert.is_true(s:run{ seconds = 0.2 })
        assert.is_true(helper.count_connections() > baseline)
      end
      local back = helper.wait_for(function() return helper.count_connections() == baseline end, 5)
      assert.is_true(back, ("%d connections after <close>, %d before"):format(helper.count_connections(), baseline))
    end)

    it("are returned when an unclosed instance is garbage-collected", function()
      local baseline = helper.settled_connections()
      do
        local s = scheduler.new{ database = helper.DATABASE, log = false }
        helper.schedule(s, helper.name("gc"), nil, { delay = 60 })
        assert.is_true(helper.count_connections() > baseline)
        s = nil -- luacheck: ignore
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local back = helper.wait_for(function()
        collectgarbage("collect")
        return helper.count_connections() == baseline
      end, 5)
      assert.is_true(back, ("%d connections after GC, %d before"):format(helper.count_connections(), baseline))
    end)
  end)

  -- PostgreSQL addresses; unusable SQLite files are in sqlite_spec
  describe("an unreachable database #postgresql", function()
    local function unreachable(database, log)
      local t0 = helper.now()
      local s, err = helper.try_new{ database = database, log = log }
      return s, err, t0
    end

    local targets = {
      ["a missing Unix socket"] = function() return "host=/nonexistent port=1 dbname=x connect_timeout=5", nil end,
      ["a closed TCP port, with a password in the URL"] = function()
        local secret = "pw-" .. helper.name("secret")
        return "postgresql://someone:" .. secret .. "@127.0.0.1:1/x?connect_timeout=5", secret
      end,
      ["a keyword string with a password"] = function()
        local secret = "kw-" .. helper.name("secret")
        return "host=127.0.0.1 port=1 dbname=x user=someone password=" .. secret .. " connect_timeout=5", secret
      end,
    }

    for label, target in pairs(targets) do
      it("(" .. label .. ") gives nil, err from every operation, fast and without the password", function()
        local database, secret = target()
        local log, entries = collecting_log()
        local s, err, t0 = unreachable(database, log)
        if s == nil then
          -- an eager connection is allowed to fail in new() itself
          helper.runtime_error(s, err, "new")
          if secret then assert_no_secret(secret, "new()'s error", err) end
        else
          local name = helper.name("unreachable")
          local calls = {
            schedule = function() return s:schedule(name, { x = 1 }) end,
            job = function() return s:job(1) end,
            cancel = function() return s:cancel(1) end,
            retry = function() return s:retry(1) end,
            drain = function() s:on(name, function() end); return s:run{ drain = true } end,
          }
          for op, call in pairs(calls) do
            local ok, v, e = pcall(call)
            assert.is_true(ok, op .. " raised: " .. tostring(v))
            helper.runtime_error(v, e, op)
            if secret then assert_no_secret(secret, op .. "'s error", e) end
          end
          -- programmer errors are still raised
          helper.raises(function() s:schedule("", nil) end)
          helper.raises(function() s:schedule(name, print) end, "function")
          s:close()
        end
        assert.is_true(helper.now() - t0 < 30, "took " .. (helper.now() - t0) .. " s")
        if secret then assert_log_clean(secret, entries) end
      end)
    end

    it("(wrong password over TCP) gives nil, err without either password", function()
      local url = os.getenv("PGTMP_TCP_URL")
      if not url then pending("PGTMP_TCP_URL is not set") return end
      local real = url:match("^postgres[a-z]*://[^:/@]+:([^@]+)@")
      assert.is_truthy(real, "PGTMP_TCP_URL has no password")
      local wrong = "wrong-" .. helper.name("pw")
      local bad_url = url:gsub(real:gsub("%p", "%%%0"), wrong, 1)
      local log, entries = collecting_log()
      local s, err = helper.try_new{ database = bad_url, log = log }
      local v, e
      if s then
        v, e = s:schedule(helper.name("wrongpw"), nil)
      else
        v, e = s, err
      end
      helper.runtime_error(v, e, "wrong password")
      assert_no_secret(wrong, "the error", e)
      assert_no_secret(real, "the error", e)
      assert_log_clean(wrong, entries)
      assert_log_clean(real, entries)
    end)
  end)

  describe("credentials", function()
    it("never appear in logs or errors of a working password connection #postgresql", function()
      local url = os.getenv("PGTMP_TCP_URL")
      if not url then pending("PGTMP_TCP_URL is not set") return end
      local secret = url:match("^postgres[a-z]*://[^:/@]+:([^@]+)@")
      assert.is_truthy(secret, "PGTMP_TCP_URL has no password")
      -- the password role may use the schema the superuser created
      helper.schedule(helper.new(), helper.name("migrate-first"), nil, { delay = 60 })
      pcall(helper.psql, "GRANT USAGE, CREATE ON SCHEMA scheduler TO scheduler_pw")
      pcall(helper.psql, "GRANT ALL ON ALL TABLES IN SCHEMA scheduler TO scheduler_pw")
      pcall(helper.psql, "GRANT ALL ON ALL SEQUENCES IN SCHEMA scheduler TO scheduler_pw")

      local log, entries = collecting_log()
      local s = helper.new{ database = url, log = log, backoff = function() return 60 end }
      local name = helper.name("pw")
      local errors = {}
      local id, err = s:schedule(name, { secret_free = true })
      errors[#errors + 1] = err
      if id then
        s:on(name, function() error("listener failure to be logged") end)
        local n, e = s:run{ drain = true }
        errors[#errors + 1] = e
        assert.equals("number", type(n), tostring(e))
        local job = helper.ok(s:job(id))
        assert_no_secret(secret, "last_error", job.last_error)
      else
        helper.runtime_error(id, err, "schedule over TCP")
      end
      for _, e in ipairs(errors) do assert_no_secret(secret, "an error", e) end
      assert_log_clean(secret, entries)
      assert_no_secret(secret, "tostring(instance)", tostring(s))
    end)

    -- found by fuzz/database_string.c: libpq quotes the undecoded token of a
    -- bad percent escape, and reads user-info up to the first '@'
    it("never appear in the error for a URL libpq cannot parse", function()
      for _, case in ipairs {
        { "postgresql://app:pw%zz-SECRET@127.0.0.1:1/x", "pw%zz-SECRET" },
        { "postgresql://app:pw?SECRET%zz@127.0.0.1:1/x", "pw?SECRET%zz" },
        { "postgresql://app:pw%zzSECRET@h@127.0.0.1:1/x", "pw%zzSECRET" },
        { "postgresql://127.0.0.1:1/x?password=50%off-SECRET", "50%off-SECRET" },
        { "postgresql://127.0.0.1:1/x?sslmode=disable&password=SECRET%zz&user=app", "SECRET%zz" },
      } do
        local err = helper.raises(function() scheduler.new{ database = case[1], log = false } end,
          "invalid database string")
        assert_no_secret("SECRET", "the error for " .. case[1], err)
        assert_no_secret(case[2], "the error for " .. case[1], err)
      end
    end)

    it("a log function receives (level, message) for a failing listener", function()
      local log, entries = collecting_log()
      local s = helper.new{ log = log, backoff = function() return 60 end }
      local name = helper.name("logged")
      helper.schedule(s, name, nil)
      s:on(name, function() error("to be logged " .. name) end)
      s:run{ drain = true }
      assert.is_true(#entries > 0, "nothing was logged")
      for _, e in ipairs(entries) do
        assert.equals("string", type(e.level))
        assert.equals("string", type(e.message))
      end
      local mentioned = false
      for _, e in ipairs(entries) do
        if helper.contains(e.message, name) then mentioned = true end
      end
      assert.is_true(mentioned, "the failure was not logged")
    end)

    -- Found by the fault suite: worker processes share stderr, and a line
    -- written in pieces (one write(2) each) interleaved with another's.
    it("the default log writes each line with a single write, so processes sharing stderr never mix lines", function()
      -- file:write issues one write(2) per argument: a line must come as one
      local calls = {}
      local real = io.stderr
      local function capture()
        return { write = function(self, ...)
          calls[#calls + 1] = select("#", ...) == 1 and (...) or ("%d pieces"):format(select("#", ...))
          return self
        end }
      end
      io.stderr = capture()
      local ok, err = pcall(function()
        local s = helper.new{ log = "info", backoff = function() return 60 end }
        local name = helper.name("one-write")
        helper.schedule(s, name, nil)
        s:on(name, function() error("logged in one piece") end)
        s:run{ drain = true }
      end)
      io.stderr = real
      assert(ok, err)
      assert.is_true(#calls > 0, "nothing was logged")
      for _, c in ipairs(calls) do assert.matches("^[^\n]*\n$", c) end
      local run = require "scheduler.cli.run"
      for _, format in ipairs { "text", "json" } do
        calls = {}
        io.stderr = capture()
        ok, err = pcall(run.make_log("info", format, { process = "worker", worker = 1, id = "h:1" }), "warn", "hello")
        io.stderr = real
        assert(ok, err)
        assert.equals(1, #calls, format)
        assert.matches("^[^\n]*hello[^\n]*\n$", calls[1])
      end
    end)

    it("log = false logs nothing and raises nothing", function()
      local s = helper.new{ log = false, backoff = function() return 60 end }
      local name = helper.name("quiet")
      helper.schedule(s, name, nil)
      s:on(name, function() error("quiet failure") end)
      assert.equals("number", type(s:run{ drain = true }))
    end)
  end)

  describe("runtime failures", function()
    it("leave no partial row behind", function()
      local s = helper.new()
      local name = helper.name("partial")
      local ok, id, err = pcall(s.schedule, s, name, { text = "nul\0byte" })
      assert.is_true(ok, tostring(id))
      if id == nil then
        helper.runtime_error(id, err, "schedule with NUL")
        assert.equals(0, helper.count_jobs(name))
      end
      -- the instance still works afterwards
      local id2 = helper.schedule(s, name, "fine")
      assert.equals("fine", helper.ok(s:job(id2)).payload)
    end)

    it("do not break the instance when the server ends the connection #postgresql", function()
      local s = helper.new()
      local name = helper.name("reconnect")
      helper.schedule(s, name, nil, { delay = 60 })
      helper.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        .. "WHERE application_name LIKE 'lua-scheduler%' AND pid <> pg_backend_pid()")
      helper.sleep(0.2)
      -- the next call may fail with nil, err, but the instance recovers
      local id, err = s:schedule(name, 1)
      if id == nil then
        helper.runtime_error(id, err, "after termination")
        id = helper.schedule(s, name, 1)
      end
      assert.equals(name, helper.ok(s:job(id)).name)
    end)
  end)
end)
