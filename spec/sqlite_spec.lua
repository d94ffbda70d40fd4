-- The SQLite backend's own guarantees (the rest of the suite runs on both
-- backends): the default database file, several processes on one file,
-- wake-ups across processes without polling, crashes (kill -9 mid-job and
-- mid-write) and reopening the file, unusable files (read-only, not a
-- database, damaged, newer schema), memory databases, no file left open.
-- Tagged #sqlite: `make test` runs it in the SQLite pass only.
local helper = require "spec.helper"

local shquote = helper.shquote

-- The repository root (specs run from it) and module paths usable from any
-- directory.
local ROOT = helper.sh("pwd"):gsub("%s+$", "")
local function absolute_paths(path)
  return (path:gsub("[^;]+", function(entry)
    if entry:sub(1, 1) == "/" then return entry end
    return ROOT .. "/" .. entry:gsub("^%./", "")
  end))
end
local LUA_ENV = ("LUA_PATH=%s LUA_CPATH=%s"):format(shquote(absolute_paths(package.path)),
  shquote(absolute_paths(package.cpath)))

--- Run Lua code in a new process, in directory `dir`, with nothing
--- configured (no LUA_SCHEDULER_DATABASE).  Returns its output and success.
local function lua_in(dir, code)
  return helper.sh(("cd %s && env -u LUA_SCHEDULER_DATABASE %s %s -e %s 2>&1"):format(
    shquote(dir), LUA_ENV, shquote(helper.LUA), shquote(code)))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function can_write_in(dir)
  local probe = dir .. "/.probe"
  local f = io.open(probe, "wb")
  if not f then return false end
  f:close()
  os.remove(probe)
  return true
end

local function can_open_for_writing(path)
  local f = io.open(path, "r+b")
  if f then f:close() end
  return f ~= nil
end

--- Make a directory or file read-only, even for root (chattr +i when
--- permissions do not stop it).  Returns the function that undoes it.
local function make_read_only(path, writable)
  helper.sh("chmod a-w " .. shquote(path))
  if not writable(path) then return function() helper.sh("chmod u+w " .. shquote(path)) end end
  helper.sh("chattr +i " .. shquote(path) .. " 2>/dev/null")
  if not writable(path) then
    return function() helper.sh("chattr -i " .. shquote(path) .. "; chmod u+w " .. shquote(path)) end
  end
  error("cannot make " .. path .. " read-only here (root without chattr +i?)")
end

--- CPU seconds (user + system) used so far by process `pid`.
local TICKS = tonumber((helper.sh("getconf CLK_TCK"))) or 100
local function cpu_seconds(pid)
  local stat = helper.read_file("/proc/" .. pid .. "/stat") or ""
  local fields = {}
  for f in stat:match("^.*%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  -- after the command: state is field 3 of stat(5), utime 14, stime 15
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICKS
end

--- Descriptors of this process open on files whose path starts with prefix.
local function open_files(prefix)
  local out = helper.sh("ls -l /proc/" .. helper.getpid() .. "/fd 2>/dev/null")
  local n = 0
  for target in out:gmatch("%-> ([^\n]+)") do
    if target:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

local function assert_exactly_once(ids, records, context)
  local tally = helper.tally(records, "id")
  for _, id in ipairs(ids) do
    assert.equals(1, tally[id] or 0, ("job %d ran %d times\n%s"):format(id, tally[id] or 0, context or ""))
    tally[id] = nil
  end
  assert.is_nil(next(tally), "unexpected jobs ran")
end

local describe_all = helper.describe_all

describe("sqlite #sqlite", function()
  after_each(helper.cleanup)

  describe("the default database", function()
    it("is the file scheduler.db in the working directory, in WAL mode", function()
      local dir = helper.tmpdir()
      local out, ok = lua_in(dir, [[
        local scheduler = require "scheduler"
        io.write(assert(scheduler.schedule("Default", { hello = "world" }, { delay = 60 })))]])
      assert.is_true(ok, out)
      local id = math.tointeger(tonumber(out))
      assert.is_truthy(id, out)
      local file = dir .. "/scheduler.db"
      assert.is_true(exists(file), "no " .. file)
      assert.equals("Default", helper.sqlite(("SELECT name FROM scheduler_jobs WHERE id = %d"):format(id),
        { path = file }))
      assert.equals("wal", helper.sqlite("PRAGMA journal_mode", { path = file }))
      assert.equals("14", helper.sqlite("SELECT max(version) FROM scheduler_migrations", { path = file }))
      -- another process started there finds the job, and runs it
      out, ok = lua_in(dir, ([[
        local scheduler = require "scheduler"
        scheduler.configure { log = false }
        scheduler.on("Default", function(payload) io.write(payload.hello, " ") end)
        io.write(assert(scheduler.job(%d)).state, " ")
        io.write(tostring(scheduler.run { drain = true }))]]):format(id))
      assert.is_true(ok, out)
      assert.equals("scheduled 0", out) -- not due yet: in a minute
    end)
  end)

  describe("several processes on one file #slow", function()
    it("schedule and run concurrently: each job once, and no locking error", function()
      local name = helper.name("concurrent")
      local workers, producers = {}, {}
      for i = 1, 3 do workers[i] = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "run" } end
      for _, w in ipairs(workers) do assert(w:wait_file("ready", 10), w:describe()) end
      for i = 1, 2 do
        producers[i] = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "produce", WORKER_COUNT = 150 }
      end
      for _, p in ipairs(producers) do assert.equals(0, p:wait(60), p:describe()) end
      local ids = {}
      for _, r in ipairs(helper.all_results(producers, "scheduled")) do ids[#ids + 1] = r.id end
      assert.equals(300, #ids)
      local done = helper.wait_for(function() return #helper.all_results(workers, "done") >= 300 end, 30)
      assert.is_truthy(done, describe_all(workers))
      helper.sleep(0.3) -- would a job run twice?
      assert_exactly_once(ids, helper.all_results(workers, "start"), describe_all(workers))
      for _, w in ipairs(workers) do w:kill("TERM") end
      for _, w in ipairs(workers) do assert.equals(0, w:wait(10), w:describe()) end
      for _, p in ipairs(workers) do
        assert.is_falsy(p:log():lower():find("lock", 1, true), p:describe())
      end
      assert.equals(0, helper.count_jobs(name))
    end)

    it("wake an idle worker within 100 ms of a job scheduled by another process; idle, it uses no CPU",
      function()
        local name = helper.name("wake")
        local p = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "run" }
        assert(p:wait_file("ready", 10), p:describe())
        helper.sleep(0.5)
        local cpu0 = cpu_seconds(p:pid())
        helper.sleep(2)
        local cpu = cpu_seconds(p:pid()) - cpu0
        assert.is_true(cpu <= 0.03, ("an idle worker used %.3f s of CPU in 2 s: is it polling?"):format(cpu))
        local s = helper.new()
        local late = {}
        for round = 1, 5 do
          local t = helper.now()
          local id = helper.schedule(s, name, round)
          local started = helper.wait_for(function() return p:events("start", id)[1] end, 5, 0.002)
          assert.is_truthy(started, p:describe())
          late[round] = started.time - t
          helper.sleep(0.2)
        end
        table.sort(late)
        assert.is_true(late[3] < 0.1, ("median wake-up %.3f s (all: %s)"):format(late[3], table.concat(late, " ")))
        assert.is_true(late[5] < 0.5, ("slowest wake-up %.3f s"):format(late[5]))
      end)

    it("a producer writing as fast as it can does not starve a worker's claims", function()
      local busy, name = helper.name("busy"), helper.name("starved")
      local producer = helper.spawn { WORKER_NAMES = busy, WORKER_MODE = "produce", WORKER_DELAY = 3600 }
      local p = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "run" }
      assert(p:wait_file("ready", 10), p:describe())
      assert.is_truthy(helper.wait_for(function() return #producer:events("scheduled") > 100 end, 10),
        producer:describe())
      local s = helper.new()
      for round = 1, 5 do
        local t = helper.now()
        local id = helper.schedule(s, name, round)
        local started = helper.wait_for(function() return p:events("start", id)[1] end, 5, 0.005)
        assert.is_truthy(started, p:describe())
        assert.is_true(started.time - t < 0.5, ("round %d: started %.3f s late"):format(round, started.time - t))
      end
      assert.is_true(producer:alive(), producer:describe()) -- it kept writing all along
      assert.is_falsy(producer:log():lower():find("lock", 1, true), producer:describe())
    end)
  end)

  describe("crashes #slow", function()
    it("a worker killed with kill -9 mid-job: the job runs again after its lease; the file is intact", function()
      local name, lease = helper.name("kill9"), 1
      local a = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "run", WORKER_LEASE = lease, WORKER_SLEEP = 60 }
      assert(a:wait_file("ready", 10), a:describe())
      local s = helper.new { lease = lease }
      local id = helper.schedule(s, name, "victim")
      assert.is_truthy(helper.wait_for(function() return a:events("start", id)[1] end, 10), a:describe())
      assert.is_true(a:kill("KILL"))
      assert.equals(137, a:wait(5), a:describe())
      local rerun
      s:on(name, function(payload, job) rerun = { payload = payload, attempt = job.attempt }; s:stop() end)
      assert.is_true(s:run { seconds = lease + 5 })
      assert.same({ payload = "victim", attempt = 2 }, rerun)
      assert.is_nil(s:job(id))
      assert.equals("ok", helper.sqlite("PRAGMA integrity_check"))
    end)

    it("a process killed while scheduling loses no job it got an id for; the file reopens intact", function()
      local dir = helper.tmpdir()
      local file = dir .. "/crash.db"
      local name = helper.name("crash")
      local p = helper.spawn { WORKER_NAMES = name, WORKER_MODE = "produce", WORKER_DELAY = 3600,
        WORKER_DATABASE = "sqlite:" .. file }
      assert.is_truthy(helper.wait_for(function() return #p:events("scheduled") >= 200 end, 20), p:describe())
      assert.is_true(p:kill("KILL"))
      assert.equals(137, p:wait(5), p:describe())
      local acknowledged = p:events("scheduled")
      -- the dead process left its write-ahead log behind: recovery is next
      assert.is_true(exists(file .. "-wal"), "no WAL left by the crash")
      local s = helper.new { database = "sqlite:" .. file }
      for _, r in ipairs(acknowledged) do
        local job = s:job(r.id)
        assert.is_table(job, "job " .. r.id .. " was lost")
        assert.equals(name, job.name)
      end
      local stored = tonumber(helper.sqlite(("SELECT count(*) FROM scheduler_jobs WHERE name = %s")
        :format(helper.literal(name)), { path = file }))
      -- at most the one job whose id the process had no time to record
      assert.is_true(stored == #acknowledged or stored == #acknowledged + 1,
        ("%d stored, %d acknowledged"):format(stored, #acknowledged))
      assert.equals("ok", helper.sqlite("PRAGMA integrity_check", { path = file }))
    end)
  end)

  describe("an unusable file gives a clear error and is left untouched", function()
    local function assert_refused(s, path, ...)
      local calls = {
        schedule = function() return s:schedule(helper.name("x"), 1) end,
        job = function() return s:job(1) end,
        drain = function() s:on("x", function() end); return s:run { drain = true } end,
      }
      for op, call in pairs(calls) do
        local v, err = call()
        helper.runtime_error(v, err, op)
        assert.is_truthy(helper.contains(err, path), op .. ": the error does not name the file: " .. err)
        for i = 1, select("#", ...) do
          local needle = select(i, ...)
          assert.is_truthy(err:lower():find(needle:lower(), 1, true), ("%s: %q does not say %q"):format(op, err, needle))
        end
      end
    end

    it("(a path in a read-only directory)", function()
      local dir = helper.tmpdir() .. "/ro"
      assert(os.execute("mkdir " .. shquote(dir)))
      local undo = make_read_only(dir, can_write_in)
      finally(undo)
      local path = dir .. "/jobs.db"
      assert_refused(helper.new { database = "sqlite:" .. path }, path, "cannot open the database",
        "creating files in " .. dir)
      assert.is_false(exists(path))
    end)

    it("(a read-only database file)", function()
      local path = helper.tmpdir() .. "/ro.db"
      local s = helper.new { database = "sqlite:" .. path }
      helper.schedule(s, helper.name("before"), 1)
      s:close()
      local before = helper.read_file(path)
      local undo = make_read_only(path, can_open_for_writing)
      finally(undo)
      assert_refused(helper.new { database = "sqlite:" .. path }, path, "read-only")
      assert.equals(before, helper.read_file(path))
    end)

    it("(a file that is not an SQLite database: never overwritten)", function()
      local dir = helper.tmpdir()
      local path = dir .. "/notes.txt"
      local content = ("important notes, not a database\n"):rep(200)
      helper.write_file(path, content)
      assert_refused(helper.new { database = "sqlite:" .. path }, path, "not an sqlite database")
      assert.equals(content, helper.read_file(path))
      for _, suffix in ipairs { "-wal", "-shm", "-journal", "-wake" } do
        assert.is_false(exists(path .. suffix), "created " .. path .. suffix)
      end
    end)

    it("(a damaged database)", function()
      local path = helper.tmpdir() .. "/damaged.db"
      local s = helper.new { database = "sqlite:" .. path }
      helper.schedule(s, helper.name("before"), 1)
      s:close() -- the last connection checkpoints: everything is in the file
      local data = assert(helper.read_file(path))
      -- page 1 after the file header holds the schema: scramble it
      local damaged = data:sub(1, 100) .. ("\171"):rep(3900) .. data:sub(4001)
      helper.write_file(path, damaged)
      assert_refused(helper.new { database = "sqlite:" .. path }, path)
      local _, err = helper.new { database = "sqlite:" .. path }:job(1)
      assert.is_truthy(err:find("damaged", 1, true) or err:find("not an SQLite database", 1, true), err)
      assert.equals(damaged, helper.read_file(path))
    end)

    it("(a schema newer than this lua-scheduler)", function()
      local path = helper.tmpdir() .. "/newer.db"
      helper.schedule(helper.new { database = "sqlite:" .. path }, helper.name("before"), 1)
      helper.sqlite("INSERT INTO scheduler_migrations (version, applied_at) VALUES (99, 0)", { path = path })
      local v, err = helper.new { database = "sqlite:" .. path }:job(1)
      helper.runtime_error(v, err)
      assert.is_truthy(err:find("newer than this lua-scheduler", 1, true), err)
    end)
  end)

  describe("memory databases", function()
    it("sqlite::memory: is private to its instance", function()
      local a = helper.new { database = "sqlite::memory:" }
      local b = helper.new { database = "sqlite::memory:" }
      local id = helper.schedule(a, "M", { x = 1 }, { delay = 60 })
      helper.schedule(b, "Other", nil, { delay = 60 })
      assert.equals("M", helper.ok(a:job(id)).name)
      assert.equals("Other", helper.ok(b:job(id)).name) -- its own first job
    end)

    it("sqlite::memory:NAME is shared by the instances that name it, and the heartbeat thread's connection",
      function()
        local db = "sqlite::memory:" .. helper.name("shared")
        local a = helper.new { database = db, lease = 1 }
        local c = helper.new { database = db, lease = 1 }
        local id = helper.schedule(a, "Long", nil)
        assert.equals("Long", helper.ok(c:job(id)).name)
        -- a job longer than the lease stays leased: the heartbeat thread
        -- renews it through its own connection to the same memory database
        local stolen, ran = nil, 0
        c:on("Long", function() stolen = true end)
        a:on("Long", function()
          ran = ran + 1
          helper.sleep(2)
          stolen = stolen or c:run { drain = true } ~= 0
        end)
        assert.equals(1, a:run { drain = true })
        assert.equals(1, ran)
        assert.is_false(stolen)
        assert.is_nil(c:job(id))
      end)
  end)

  describe("partitions kept with the job (migration 14)", function()
    local function parts(path, name)
      return helper.sqlite(("SELECT id || ':' || state || ':' || coalesce(part, 'NULL') FROM scheduler_jobs"
        .. " WHERE name = '%s' ORDER BY id"):format(name), { path = path })
    end

    it("every insert gets its partition, plain SQL too; limit() rewrites every job's when by changes", function()
      local path = helper.tmpdir() .. "/parts.db"
      local s = helper.new { database = "sqlite:" .. path }
      local name = helper.name("parts")
      local a = helper.schedule(s, name, { tenant = "a", n = 1 }, { key = "k1", delay = 60 })
      assert.equals(a .. ":scheduled:NULL", parts(path, name)) -- no limit: nothing stored
      -- the triggers that fill it exist only while a limit has a by: an
      -- insert pays nothing for them before
      local triggers = "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'scheduler_jobs_part_%'"
      helper.ok(s:limit(name, { concurrency = 1 }))
      assert.equals("0", helper.sqlite(triggers, { path = path }))
      helper.ok(s:limit(name, { concurrency = 1, by = "tenant" }))
      assert.equals("2", helper.sqlite(triggers, { path = path }))
      local b = helper.schedule(s, name, { tenant = 7 }, { delay = 60 })
      local c = helper.ok(s:schedule_many { { name, "not an object", { delay = 60 } } })[1]
      helper.sqlite(("INSERT INTO scheduler_jobs (name, payload, key) VALUES ('%s', '{\"tenant\": \"sql\"}', 'k4');"
        .. " INSERT INTO scheduler_jobs (name, payload, state) VALUES ('%s', '{}', 'failed');"):format(name, name),
        { path = path })
      local d, e = c + 1, c + 2
      assert.equals(table.concat({ a .. ":scheduled:a", b .. ":scheduled:7", c .. ":scheduled:",
        d .. ":scheduled:sql", e .. ":failed:" }, "\n"), parts(path, name))
      -- another program rewrites a payload: the job moves with it
      helper.sqlite(("UPDATE scheduler_jobs SET payload = '{\"tenant\": \"moved\"}' WHERE id = %d"):format(b),
        { path = path })
      assert.equals(b .. ":scheduled:moved", helper.sqlite(("SELECT id || ':' || state || ':' || part"
        .. " FROM scheduler_jobs WHERE id = %d"):format(b), { path = path }))
      -- by changed: every job, failed ones too; the same by again: nothing written
      helper.ok(s:limit(name, { concurrency = 1, by = "key" }))
      assert.equals(table.concat({ a .. ":scheduled:k1", b .. ":scheduled:", c .. ":scheduled:",
        d .. ":scheduled:k4", e .. ":failed:" }, "\n"), parts(path, name))
      helper.ok(s:limit(name, { concurrency = 2, by = "key" }))
      assert.equals(a .. ":scheduled:k1", (parts(path, name):match("^[^\n]+")))
      -- by gone (a limit of the whole name), then the limit gone: NULL
      helper.ok(s:limit(name, { concurrency = 2 }))
      assert.equals("0", helper.sqlite(("SELECT count(*) FROM scheduler_jobs WHERE name = '%s'"
        .. " AND part IS NOT NULL"):format(name), { path = path }))
      helper.ok(s:limit(name, { concurrency = 1, by = "tenant" }))
      assert.equals("5", helper.sqlite(("SELECT count(*) FROM scheduler_jobs WHERE name = '%s'"
        .. " AND part IS NOT NULL"):format(name), { path = path }))
      helper.ok(s:limit(name, nil))
      assert.equals("0", helper.sqlite(("SELECT count(*) FROM scheduler_jobs WHERE name = '%s'"
        .. " AND part IS NOT NULL"):format(name), { path = path }))
      assert.equals("0", helper.sqlite(triggers, { path = path }))
      s:close()
    end)

    it("an upgrade from version 13 stores the partitions of the jobs there", function()
      local path = helper.tmpdir() .. "/v13.db"
      local s = helper.new { database = "sqlite:" .. path }
      local name = helper.name("v13")
      helper.ok(s:limit(name, { concurrency = 1, by = "tenant" }))
      local a = helper.schedule(s, name, { tenant = "x" }, { delay = 60 })
      local b = helper.schedule(s, "other", { tenant = "x" }, { delay = 60 })
      s:close()
      helper.sqlite("DROP TRIGGER scheduler_jobs_part_insert; DROP TRIGGER scheduler_jobs_part_update;"
        .. " DROP INDEX scheduler_jobs_part; ALTER TABLE scheduler_jobs DROP COLUMN part;"
        .. " DELETE FROM scheduler_migrations WHERE version = 14;", { path = path })
      s = helper.new { database = "sqlite:" .. path }
      assert.equals(14, helper.ok(s:schema_version()))
      assert.equals(a .. ":scheduled:x", parts(path, name))
      assert.equals(b .. ":scheduled:NULL", parts(path, "other"))
      s:close()
    end)

    it("a claim reads a partitioned name's jobs by the index of partitions, never all of them", function()
      -- the claim's own statement, as compiled into the module
      local so = assert(package.searchpath("scheduler.core", package.cpath))
      local f = assert(io.open(so, "rb"))
      local bin = f:read("a")
      f:close()
      local at = assert(bin:find("WITH RECURSIVE r AS (SELECT CASE", 1, true), "no partition pick in " .. so)
      local pick = bin:sub(at, bin:find("\0", at, true) - 1)
      local path = helper.tmpdir() .. "/plan.db"
      local s = helper.new { database = "sqlite:" .. path }
      helper.schedule(s, helper.name("plan"), 1) -- (the schema made)
      s:close()
      local plan = helper.sqlite("EXPLAIN QUERY PLAN " .. pick, { path = path })
      local searched = 0
      for line in plan:gmatch("[^\n]+") do
        -- the running jobs, few, by the index of leases; the jobs waiting,
        -- only by seeks into the index of partitions (or by id)
        local step = line:match("(S[CE][AR][NR]C?H? .*)$")
        if step then
          assert.is_truthy(step:find("^SCAN j USING INDEX scheduler_jobs_lease")
            or step:find("^SEARCH x USING INDEX scheduler_jobs_part %(name=%? AND part")
            or step:find("^SEARCH j USING INTEGER PRIMARY KEY")
            or step:find("^SEARCH b USING PRIMARY KEY")
            or step:find("^SEARCH r ") or step:find("^SCAN [rwc]%s*$")
            or step:find("^SCAN %(subquery%-%d+%)%s*$"), step .. "\n" .. plan)
        end
        if line:find("SEARCH x USING INDEX scheduler_jobs_part (name=? AND part", 1, true) then
          searched = searched + 1
        end
      end
      assert.is_true(searched >= 5, plan)
    end)

    it("a job whose stored partition is not its own is not claimed out of it", function()
      local path = helper.tmpdir() .. "/stale.db"
      local s = helper.new { database = "sqlite:" .. path }
      local name = helper.name("stale")
      helper.ok(s:limit(name, { concurrency = 1, by = "tenant" }))
      local a = helper.schedule(s, name, { tenant = "a" })
      local b = helper.schedule(s, name, { tenant = "a" })
      helper.sqlite(("UPDATE scheduler_jobs SET part = 'b' WHERE id = %d"):format(b), { path = path })
      local ran = {}
      s:on(name, function(_, job) ran[#ran + 1] = job.id end)
      helper.drain_until(s, function() return #ran >= 1 end, 3)
      assert.same({ a }, ran)
      assert.equals("scheduled", helper.ok(s:job(b)).state)
      s:close()
    end)
  end)

  describe("files", function()
    it("no descriptor stays open on the database after close() or garbage collection", function()
      local dir = helper.tmpdir()
      local prefix = dir .. "/gone.db"
      do
        local s = helper.new { database = "sqlite:" .. prefix }
        local name = helper.name("fd")
        helper.schedule(s, name, 1)
        s:on(name, function() end)
        assert.equals(1, s:run { drain = true })
        assert.is_true(s:run { seconds = 0.1 })
        assert.is_true(open_files(prefix) > 0)
        s:close()
        assert.equals(0, open_files(prefix))
      end
      do
        local s = helper.scheduler.new { database = "sqlite:" .. prefix, log = false }
        helper.schedule(s, helper.name("gc"), 1)
        assert.is_true(open_files(prefix) > 0)
        s = nil -- luacheck: ignore
      end
      collectgarbage("collect")
      collectgarbage("collect")
      assert.equals(0, open_files(prefix))
    end)
  end)
end)
