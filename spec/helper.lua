-- spec/helper.lua: shared utilities for the lua-scheduler specs.
--
-- The specs run under `make test`, which starts a throwaway PostgreSQL
-- cluster and exports LUA_SCHEDULER_DATABASE, PGHOST/PGPORT/PGDATABASE/PGUSER,
-- PGTMP_DIR and PGTMP_TCP_URL.  The database is shared by every spec file
-- (and by earlier runs of a spec), so nothing here assumes it is empty: every
-- test uses fresh job names from helper.name().
--
-- Everything a spec starts (instances, subprocesses, temporary directories)
-- is registered here and torn down by helper.cleanup(), which every spec calls
-- from after_each.

local scheduler = require "scheduler"

-- busted's summary line reaches its file (make test's backends write to
-- files) before the process exits: under `make test-memory`, a process
-- whose LeakSanitizer fails at exit loses what stdio still buffered, and
-- the run checks that summary (Makefile, test-memory)
io.stdout:setvbuf("line")

local helper = {}

helper.scheduler = scheduler
helper.DATABASE = os.getenv("LUA_SCHEDULER_DATABASE")
-- The backend under test: `make test` runs the suite once per backend, with
-- LUA_SCHEDULER_DATABASE set to the throwaway PostgreSQL, then to an SQLite
-- file.  PostgreSQL-only specs are tagged #postgresql, SQLite-only ones
-- #sqlite; each run excludes the other backend's tag.
helper.SQLITE = (helper.DATABASE or scheduler.DEFAULT_DATABASE):match("^sqlite:") ~= nil
helper.POSTGRESQL = not helper.SQLITE
helper.BACKEND = helper.SQLITE and "sqlite" or "postgresql"
helper.LUA = "lua5.4"
helper.WORKER = "spec/support/worker.lua"

-- Generous bounds for timing assertions (a loaded CI machine is slow).
helper.SLACK = 1.0

local has_system, system = pcall(require, "system")
if has_system and not (type(system) == "table" and system.gettime and system.sleep) then
  has_system = false
end

---------------------------------------------------------------------------
-- clocks, sleeping, polling
---------------------------------------------------------------------------

--- Wall-clock Unix time as a float.  Independent of scheduler.now() (which
--- has its own spec) whenever luasystem is available (busted depends on it).
function helper.now()
  if has_system then return system.gettime() end
  return scheduler.now()
end

--- Block the whole process for `s` seconds.
function helper.sleep(s)
  if s <= 0 then return end
  if has_system then
    local deadline = helper.now() + s
    repeat
      local left = deadline - helper.now()
      if left > 0 then system.sleep(math.min(left, 0.05)) end
    until helper.now() >= deadline
  else
    os.execute(("sleep %.3f"):format(s))
  end
end

--- Poll `pred` every `interval` seconds (default 0.05) until it returns a
--- truthy value or `timeout` seconds (default 5) have passed.  Returns the
--- truthy value, or the last (falsy) result.
function helper.wait_for(pred, timeout, interval)
  local deadline = helper.now() + (timeout or 5)
  while true do
    local v = pred()
    if v then return v end
    if helper.now() >= deadline then return v end
    helper.sleep(interval or 0.05)
  end
end

--- Job `id`'s row as s:jobs() lists it when a worker holds it on a lease
--- (its locked_until set), else nil.  A job of a held batch (PostgreSQL)
--- reads as running once its listener has run 10 ms, without a lease:
--- specs that attack the lease path wait for this.
function helper.leased(s, id)
  local rows = s:jobs { id = id }
  local j = rows and rows[1]
  if j and j.state == "running" and j.locked_until then return j end
end

--- Measure how long fn(...) takes: returns elapsed seconds, then fn's results.
function helper.timed(fn, ...)
  local t0 = helper.now()
  local r = table.pack(fn(...))
  return helper.now() - t0, table.unpack(r, 1, r.n)
end

---------------------------------------------------------------------------
-- unique names
---------------------------------------------------------------------------

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
helper.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end
helper.write_file = write_file

--- The pid of this Lua process (read from /proc/self, i.e. the reader).
function helper.getpid()
  local stat = read_file("/proc/self/stat")
  return stat and tonumber(stat:match("^(%d+)")) or 0
end

local name_counter = 0
-- busted may seed math.random with a fixed seed: mix in the pid and the clock
local name_salt = ("%x%x"):format(helper.getpid(), math.floor(helper.now() * 1e6) % 0xffffff)

--- A job name (or key) nobody else uses: "<prefix>-<salt>-<n>-<random>".
function helper.name(prefix)
  name_counter = name_counter + 1
  return ("%s-%s-%d-%06x"):format(prefix or "job", name_salt, name_counter,
    math.random(0, 0xffffff))
end

---------------------------------------------------------------------------
-- shell and psql
---------------------------------------------------------------------------

--- Quote a string for /bin/sh.
function helper.shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local shquote = helper.shquote

--- Quote a string as an SQL literal.
function helper.literal(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

--- Run a shell command, return its stdout, success flag and exit code.
function helper.sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

--- Open the FIFO `path` for writing and close it, which lets a reader
--- blocked in open(2) go on; gives up after `timeout` seconds (default 10)
--- when no reader comes, so that a test fails rather than hangs.  Returns
--- true when a reader took it.
function helper.open_fifo(path, timeout)
  local _, ok = helper.sh(("timeout %d sh -c %s"):format(math.ceil(timeout or 10),
    shquote(": > " .. shquote(path))))
  return ok == true
end

--- Run SQL with psql on the test database (PGHOST etc. from the
--- environment) and return its unaligned, tuples-only output without the
--- final newline.  Raises with psql's stderr on failure.  The SQL goes
--- through a file, so it may be large.  opts.dbname selects another database
--- of the same cluster; opts.timeout is the statement timeout in seconds
--- (default 30).
function helper.psql(sql, opts)
  local sqlfile, errfile = os.tmpname(), os.tmpname()
  write_file(sqlfile, sql)
  -- a statement that waits on something (a lock, a stuck backend) fails
  -- instead of hanging the suite
  local cmd = "PGOPTIONS='-c statement_timeout=" .. ((opts and opts.timeout) or 30) * 1000
    .. "' psql -XAtq -v ON_ERROR_STOP=1"
  if opts and opts.dbname then cmd = cmd .. " -d " .. shquote(opts.dbname) end
  cmd = cmd .. " -f " .. shquote(sqlfile) .. " 2>" .. shquote(errfile)
  local out, ok, code = helper.sh(cmd)
  local err = read_file(errfile) or ""
  os.remove(sqlfile)
  os.remove(errfile)
  if not ok then
    local shown = #sql > 300 and (sql:sub(1, 300) .. "... (" .. #sql .. " bytes)") or sql
    error(("psql failed (exit %s): %s\nSQL: %s"):format(tostring(code), err:sub(1, 2000), shown), 2)
  end
  return (out:gsub("\n$", ""))
end

--- psql for a single integer result.
function helper.psql_int(sql, opts)
  local out = helper.psql(sql, opts)
  local n = math.tointeger(tonumber(out))
  if not n then error("psql: expected an integer, got " .. ("%q"):format(out), 2) end
  return n
end

--- The file of the SQLite database under test ("sqlite:PATH").
function helper.sqlite_path()
  local db = helper.DATABASE or scheduler.DEFAULT_DATABASE
  return (assert(db:match("^sqlite:(.+)$"), "not an SQLite database: " .. db))
end

--- Run SQL with the sqlite3 tool on the SQLite test database (or opts.path)
--- and return its output ("|"-separated columns, like helper.psql's) without
--- the final newline.  Raises with the tool's stderr on failure.  Waits up to
--- opts.timeout seconds (default 30) for a lock another process holds.
function helper.sqlite(sql, opts)
  local path = (opts and opts.path) or helper.sqlite_path()
  local sqlfile, errfile = os.tmpname(), os.tmpname()
  write_file(sqlfile, (".timeout %d\n%s\n"):format(((opts and opts.timeout) or 30) * 1000, sql))
  local cmd = "sqlite3 -batch -bail -noheader -list " .. shquote(path) .. " <" .. shquote(sqlfile)
    .. " 2>" .. shquote(errfile)
  local out, ok, code = helper.sh(cmd)
  local err = read_file(errfile) or ""
  os.remove(sqlfile)
  os.remove(errfile)
  if not ok then
    local shown = #sql > 300 and (sql:sub(1, 300) .. "... (" .. #sql .. " bytes)") or sql
    error(("sqlite3 failed (exit %s): %s\nSQL: %s"):format(tostring(code), err:sub(1, 2000), shown), 2)
  end
  return (out:gsub("\n$", ""))
end

--- Run SQL that both backends understand on the test database: psql on
--- PostgreSQL, the sqlite3 tool on SQLite, where the tables scheduler.jobs
--- and scheduler.crons are named scheduler_jobs and scheduler_crons (the
--- names are rewritten).  SQL that differs (now(), intervals, date_trunc)
--- belongs in an explicit `if helper.SQLITE` branch of the spec instead.
function helper.sql(sql, opts)
  if helper.POSTGRESQL then return helper.psql(sql, opts) end
  -- rewrite outside string literals only: every other chunk between single
  -- quotes is a literal (a doubled '' inside one splits it in two literals)
  local out, n = {}, 0
  for chunk in (sql .. "'"):gmatch("([^']*)'") do
    n = n + 1
    out[n] = n % 2 == 1 and chunk:gsub("scheduler%.(%a+)", "scheduler_%1") or chunk
  end
  return helper.sqlite(table.concat(out, "'"), opts)
end

--- SQL for the time `t` (Unix seconds) as the backend under test stores
--- times: a timestamptz on PostgreSQL, Unix seconds (REAL) on SQLite.  For
--- helper.sql, e.g. "UPDATE scheduler.jobs SET locked_until = "
--- .. helper.sql_time(helper.now() + 3600).
function helper.sql_time(t)
  if helper.SQLITE then return ("%.6f"):format(t) end
  return ("to_timestamp(%.6f)"):format(t)
end

--- helper.sql for a single integer result.
function helper.sql_int(sql, opts)
  local out = helper.sql(sql, opts)
  local n = math.tointeger(tonumber(out))
  if not n then error("sql: expected an integer, got " .. ("%q"):format(out), 2) end
  return n
end

--- PostgreSQL: wait until the connections of the worker process `proc`
--- (spec/support/worker.lua, worker id "spec-worker:<pid>") are gone: each
--- holds its worker's advisory lock (WORKER_LOCK in csrc/store_pg_crash.c) until
--- its backend exits, so that a killed worker's transaction has surely been
--- aborted and its batches are seen as a dead worker's.  Nothing to wait
--- for on SQLite.
function helper.wait_worker_gone(proc, timeout)
  if not helper.POSTGRESQL then return true end
  local id = helper.literal(("spec-worker:%d"):format(proc:pid()))
  return helper.wait_for(function()
    return helper.psql_int("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
      .. " AND classid = 1935895652 AND objsubid = 2"
      .. " AND objid::bigint = (hashtext(" .. id .. ")::bigint & 4294967295)") == 0
  end, timeout or 10)
end

--- How many rows scheduler.jobs holds for `name`.
function helper.count_jobs(name)
  return helper.sql_int("SELECT count(*) FROM scheduler.jobs WHERE name = " .. helper.literal(name))
end

--- How many server backends belong to lua-scheduler instances.
function helper.count_connections()
  return helper.psql_int(
    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'lua-scheduler%'")
end

--- Wait until the lua-scheduler connection count has been stable for a
--- little while (backends of closed/killed clients take a moment to exit) and
--- return it.
function helper.settled_connections()
  collectgarbage("collect")
  collectgarbage("collect")
  local last = helper.count_connections()
  local stable_since = helper.now()
  local deadline = helper.now() + 5
  while helper.now() < deadline do
    helper.sleep(0.1)
    local n = helper.count_connections()
    if n ~= last then
      last, stable_since = n, helper.now()
    elseif helper.now() - stable_since >= 0.3 then
      break
    end
  end
  return last
end

--- A libpq keyword string for another database of the test cluster.
function helper.database_for(dbname)
  local db = helper.DATABASE or ""
  if db:match("^postgres") then
    -- URL: replace the path component
    local base, query = db:match("^([^?]*)(.*)$")
    local prefix = base:match("^(postgres[a-z]*://[^/]*)") or base
    return prefix .. "/" .. dbname .. query
  end
  -- keyword string: a later keyword overrides an earlier one
  return db .. " dbname=" .. dbname
end

--- A new, empty database of the test cluster, dropped when the running test
--- ends (with helper.cleanup first: instances hold connections to it);
--- `finally` is busted's, of the calling test file.  Returns its name and
--- the database string that reaches it.
function helper.new_database(prefix, finally)
  local dbname = helper.name(prefix):gsub("%W", "_")
  helper.psql("CREATE DATABASE " .. dbname)
  finally(function()
    helper.cleanup()
    -- best effort: DROP DATABASE waits for every backend of the cluster
    -- to absorb a barrier, which a backend blocked writing to an idle
    -- client never does; the cluster is throwaway anyway
    pcall(helper.psql, "DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE)", { timeout = 5 })
  end)
  return dbname, helper.database_for(dbname)
end

--- A postgresql:// URL (with the given scheme) reaching the test database as
--- the superuser over the Unix socket, built from PGHOST etc.
function helper.socket_url(scheme)
  local function enc(s)
    return (tostring(s):gsub("[^%w%-%._~/]", function(c) return ("%%%02X"):format(c:byte()) end))
  end
  local host = assert(os.getenv("PGHOST"), "PGHOST is not set")
  local port = os.getenv("PGPORT") or "5432"
  local db = os.getenv("PGDATABASE") or "scheduler_test"
  local user = os.getenv("PGUSER") or "postgres"
  return ("%s://%s@/%s?host=%s&port=%s"):format(scheme or "postgresql", enc(user), enc(db), enc(host), enc(port))
end

---------------------------------------------------------------------------
-- instances
---------------------------------------------------------------------------

helper.instances = {}

--- Like scheduler.new(opts), but defaults to the test database and log=false,
--- and registers the instance for helper.cleanup().  Returns what
--- scheduler.new returned (instance, or nil and an error).
function helper.try_new(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.log == nil then o.log = false end
  if o.database == nil then o.database = helper.DATABASE end
  local s, err = scheduler.new(o)
  if s then helper.instances[#helper.instances + 1] = s end
  return s, err
end

--- helper.try_new, raising when no instance was returned.
function helper.new(opts)
  local s, err = helper.try_new(opts)
  if not s then error("scheduler.new failed: " .. tostring(err), 2) end
  return s
end

--- Return v, raising `err` (the second return value of an API call) when v is
--- nil or false.  helper.ok(s:schedule(...)) gives the id or a clear failure.
function helper.ok(v, err, ...)
  if v == nil or v == false then
    error("unexpected failure: " .. tostring(err):sub(1, 500), 2)
  end
  return v, err, ...
end

--- The wake-up notifications (PostgreSQL, channel "scheduler") that a
-- LISTEN session receives while fn runs: the count of those whose payload
-- names `name`, and of those for every worker (a payload without a name).
function helper.wakeups_during(name, fn)
  local listener = io.popen("psql -XAtq -c 'LISTEN scheduler' -c 'SELECT pg_sleep(1.5)' 2>&1")
  helper.sleep(0.5) -- connected and listening
  fn()
  local text = listener:read("a")
  listener:close()
  local named, everyone = 0, 0
  for payload in text:gmatch('notification "scheduler" with payload "([^"]*)"') do
    if payload:find(name, 1, true) then named = named + 1 end
    if payload:match("^[%d.]+ $") then everyone = everyone + 1 end
  end
  return named, everyone
end

--- Schedule and return the id, failing the test on nil, err.
function helper.schedule(s, name, payload, when)
  local id, err = s:schedule(name, payload, when)
  if math.type(id) ~= "integer" then
    error(("schedule(%q) returned %s, %s"):format(tostring(name):sub(1, 200), tostring(id), tostring(err):sub(1, 500)), 2)
  end
  return id
end

--- Call run{drain=true} repeatedly (at most `rounds` times, default 10)
--- until pred() is true; return the total number the drains reported.
function helper.drain_until(s, pred, rounds)
  local total = 0
  for _ = 1, rounds or 10 do
    if pred() then break end
    local n, err = s:run{ drain = true }
    if n == nil then error("drain failed: " .. tostring(err), 2) end
    total = total + n
  end
  return total
end

---------------------------------------------------------------------------
-- error assertions
---------------------------------------------------------------------------

--- Assert that fn raises; every extra argument is a substring (or a list of
--- alternative substrings) the message must contain, case-insensitively.
--- Returns the message.
function helper.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error to be raised, but the call succeeded", 2) end
  local msg = tostring(err)
  local lower = msg:lower()
  for i = 1, select("#", ...) do
    local needle = select(i, ...)
    local alts = type(needle) == "table" and needle or { needle }
    local found = false
    for _, alt in ipairs(alts) do
      if lower:find(tostring(alt):lower(), 1, true) then found = true break end
    end
    if not found then
      error(("error message %q does not mention %s"):format(msg:sub(1, 500),
        table.concat(alts, " or ")), 2)
    end
  end
  return msg
end

--- Assert the shape of a runtime failure: (nil, "scheduler: ...").
--- `v` and `err` are the two values returned by the API call.
function helper.runtime_error(v, err, what)
  what = what and (what .. ": ") or ""
  if v ~= nil then
    error(("%sexpected nil, err but got %s, %s"):format(what, tostring(v), tostring(err):sub(1, 500)), 2)
  end
  if type(err) ~= "string" then
    error(("%sexpected an error message, got %s"):format(what, tostring(err)), 2)
  end
  if err:sub(1, #"scheduler:") ~= "scheduler:" then
    error(("%serror message does not begin with 'scheduler:': %q"):format(what, err:sub(1, 500)), 2)
  end
  return err
end

--- true if `haystack` contains `needle` literally.
function helper.contains(haystack, needle)
  return type(haystack) == "string" and haystack:find(needle, 1, true) ~= nil
end

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

--- Is `pid` a live (non-zombie) process?
function helper.alive(pid)
  if not pid then return false end
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^.*%) (%S)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- Pids of the children of `pid` (scans /proc).
function helper.children(pid)
  local out = {}
  local p = io.popen("ls /proc 2>/dev/null")
  if not p then return out end
  for entry in p:lines() do
    if entry:match("^%d+$") then
      local stat = read_file("/proc/" .. entry .. "/stat")
      local ppid = stat and stat:match("^.*%) %S (%d+)")
      if ppid and tonumber(ppid) == pid then out[#out + 1] = tonumber(entry) end
    end
  end
  p:close()
  return out
end

--- Send signal `sig` (name like "TERM" or number) to `pid`.  Uses io.popen,
--- not os.execute: system(3) ignores SIGINT/SIGQUIT in the caller.
function helper.kill(pid, sig)
  if not pid then return false end
  local _, ok = helper.sh(("kill -%s %d 2>/dev/null"):format(tostring(sig or "TERM"), pid))
  return ok and true or false
end

--- A fresh temporary directory (removed by helper.cleanup()).
helper.tmpdirs = {}
function helper.tmpdir()
  local out, ok = helper.sh("mktemp -d /tmp/lua-scheduler-spec.XXXXXX")
  local dir = out:gsub("%s+$", "")
  if not ok or dir == "" then error("mktemp -d failed") end
  helper.tmpdirs[#helper.tmpdirs + 1] = dir
  return dir
end

--- Parse worker result lines "<jobid> <pid> <time> <event> <attempt>".
function helper.parse_results(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local id, pid, t, event, attempt = line:match("^(%d+) (%d+) (%S+) (%S+) ?(%d*)")
    if id then
      out[#out + 1] = {
        id = math.tointeger(tonumber(id)), pid = tonumber(pid), time = tonumber(t),
        event = event, attempt = tonumber(attempt),
      }
    end
  end
  return out
end

local Proc = {}
Proc.__index = Proc

helper.procs = {}

--- Start `lua5.4 spec/support/worker.lua` in the background.  `env` holds the
--- WORKER_* settings (see spec/support/worker.lua); WORKER_DIR is created
--- here.  The worker runs under a small sh wrapper that records its exit
--- status in DIR/exit.  `wrap`: words put before `lua5.4` (a command that
--- runs the rest, e.g. unshare).  Returns a Proc.
function helper.spawn(env, wrap)
  local dir = helper.tmpdir()
  local vars = {
    WORKER_DIR = dir,
    -- the busted process's module paths, so that the worker finds the same
    -- `scheduler` as the specs even if LUA_PATH/LUA_CPATH are not exported
    LUA_PATH = package.path,
    LUA_CPATH = package.cpath,
  }
  for k, v in pairs(env or {}) do vars[k] = tostring(v) end
  local assigns = {}
  for k, v in pairs(vars) do assigns[#assigns + 1] = shquote(k .. "=" .. v) end
  local prefix = {}
  for _, w in ipairs(wrap or {}) do prefix[#prefix + 1] = shquote(w) .. " " end
  local inner = ("%s%s %s; echo $? > %s && mv %s %s"):format(
    table.concat(prefix), helper.LUA, shquote(helper.WORKER),
    shquote(dir .. "/exit.tmp"), shquote(dir .. "/exit.tmp"), shquote(dir .. "/exit"))
  local cmd = ("env %s sh -c %s </dev/null >%s 2>&1 & echo $!"):format(
    table.concat(assigns, " "), shquote(inner), shquote(dir .. "/log"))
  local out = helper.sh(cmd)
  local wrapper = tonumber(out:match("(%d+)"))
  if not wrapper then error("could not start worker: " .. out) end
  local proc = setmetatable({ dir = dir, wrapper = wrapper, env = vars, spawned = helper.now() }, Proc)
  helper.procs[#helper.procs + 1] = proc
  return proc
end

--- Contents of a file in the worker's directory, or nil.
function Proc:file(name)
  return read_file(self.dir .. "/" .. name)
end

--- Wait for a file in the worker's directory to exist; returns its contents.
function Proc:wait_file(name, timeout)
  return helper.wait_for(function() return self:file(name) end, timeout or 30)
end

--- The worker's own pid (the Lua process), waiting for it to be written.
function Proc:pid(timeout)
  if not self._pid then
    local s = self:wait_file("pid", timeout or 10)
    self._pid = s and tonumber(s:match("%d+"))
  end
  return self._pid
end

--- CPU seconds the worker process has used so far (utime + stime, at 100
-- ticks a second, from /proc): a worker that waits must not spin.
function Proc:cpu()
  local stat = helper.read_file("/proc/" .. self:pid() .. "/stat") or ""
  local rest = stat:match("%) (.*)$") or ""
  local fields = {}
  for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
  return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100
end

--- The wrapper's record of the worker's exit status, or nil while running.
function Proc:exit_code()
  local s = self:file("exit")
  return s and tonumber(s:match("%-?%d+"))
end

--- Wait up to `timeout` seconds for the worker to exit; returns the exit
--- status (128+N when killed by signal N) or nil.
function Proc:wait(timeout)
  return helper.wait_for(function() return self:exit_code() end, timeout or 10)
end

function Proc:kill(sig)
  return helper.kill(self:pid(), sig)
end

function Proc:alive()
  return self:exit_code() == nil and helper.alive(self._pid or self:pid(1))
end

--- Parsed result lines (see helper.parse_results).
function Proc:results()
  return helper.parse_results(self:file("results"))
end

--- Result records of one event ("start" or "done"), optionally for one job.
function Proc:events(event, id)
  local out = {}
  for _, r in ipairs(self:results()) do
    if r.event == event and (id == nil or r.id == id) then out[#out + 1] = r end
  end
  return out
end

--- The worker's stdout+stderr so far (for failure messages).
function Proc:log()
  return self:file("log") or ""
end

--- A description for assertion messages.
function Proc:describe()
  local pid = self._pid or tonumber((self:file("pid") or ""):match("%d+"))
  return ("worker %s (exit %s) in %s; %s; log:\n%s%s"):format(
    tostring(pid), tostring(self:exit_code()), self.dir, self:files(), self:log(),
    pid and helper.where(pid) or "")
end

--- The files in the worker's directory, each with its age when written
--- relative to the spawn (a worker that got ready late, or never).
function Proc:files()
  local out = helper.sh(("cd %s && date +%%s.%%N && stat -c '%%n %%.3Y' * 2>/dev/null"):format(shquote(self.dir)))
  local now = tonumber(out:match("^(%S+)")) or 0
  local parts = {}
  for name, t in out:gmatch("\n(%S+) (%S+)") do
    parts[#parts + 1] = ("%s +%.1f s"):format(name, (tonumber(t) or 0) - self.spawned)
  end
  return ("spawned %.1f s ago, files: %s"):format(now - self.spawned, table.concat(parts, ", "))
end

--- What process pid is doing, for a failing assertion's message (a worker
-- that never got ready, say): its state and kernel wait channel, and every
-- process holding a file lock (/proc/locks: an SQLite writer, for one).
function helper.where(pid)
  local stat = read_file("/proc/" .. pid .. "/stat") or ""
  local out = { ("\n[pid %d: state %s, waiting in %s]"):format(pid, stat:match("^%d+ %b() (%S)") or "gone",
    read_file("/proc/" .. pid .. "/wchan") or "?") }
  -- its threads (a fetcher, a time-limit watcher)
  for tid in helper.sh(("ls /proc/%d/task 2>/dev/null"):format(pid)):gmatch("%d+") do
    if tonumber(tid) ~= pid then
      out[#out + 1] = ("[thread %s %s: waiting in %s]"):format(tid,
        (read_file(("/proc/%d/task/%s/comm"):format(pid, tid)) or "?"):gsub("%s+$", ""),
        read_file(("/proc/%d/task/%s/wchan"):format(pid, tid)) or "?")
    end
  end
  for line in (read_file("/proc/locks") or ""):gmatch("[^\n]+") do
    local holder = tonumber(line:match("^%d+: %S+%s+%S+%s+%S+%s+(%d+)"))
    local cmd = holder and read_file("/proc/" .. holder .. "/cmdline")
    if cmd then out[#out + 1] = ("[lock %s: %s]"):format(line, cmd:gsub("%z", " "):sub(1, 200)) end
  end
  return table.concat(out, "\n")
end

--- Every process's describe(), for a failing assertion's message.
function helper.describe_all(procs)
  local out = {}
  for _, p in ipairs(procs) do out[#out + 1] = p:describe() end
  return table.concat(out, "\n---\n")
end

--- Result records from several workers, together.
function helper.all_results(procs, event)
  local out = {}
  for _, p in ipairs(procs) do
    for _, r in ipairs(p:results()) do
      if event == nil or r.event == event then out[#out + 1] = r end
    end
  end
  return out
end

--- Kill a worker and its wrapper; nothing may outlive the spec.
function Proc:destroy()
  if self:exit_code() == nil then
    local pid = self._pid or tonumber((self:file("pid") or ""):match("%d+"))
    if pid and helper.alive(pid) then helper.kill(pid, "KILL") end
    for _, child in ipairs(helper.children(self.wrapper)) do helper.kill(child, "KILL") end
    helper.wait_for(function() return self:exit_code() or not helper.alive(self.wrapper) end, 3)
    if helper.alive(self.wrapper) then
      for _, child in ipairs(helper.children(self.wrapper)) do helper.kill(child, "KILL") end
      helper.kill(self.wrapper, "KILL")
    end
  end
end

---------------------------------------------------------------------------
-- cleanup
---------------------------------------------------------------------------

--- Close every instance made by helper.new, kill every spawned process and
--- remove temporary directories.  Call from after_each.
function helper.cleanup()
  for i = #helper.procs, 1, -1 do
    pcall(Proc.destroy, helper.procs[i])
    helper.procs[i] = nil
  end
  for i = #helper.instances, 1, -1 do
    local s = helper.instances[i]
    pcall(function() s:close() end)
    helper.instances[i] = nil
  end
  if not os.getenv("LUA_SCHEDULER_KEEP_SPEC_TMP") then
    for i = #helper.tmpdirs, 1, -1 do
      local dir = helper.tmpdirs[i]
      if dir:match("^/tmp/lua%-scheduler%-spec%.") then
        helper.sh("rm -rf " .. shquote(dir))
      end
      helper.tmpdirs[i] = nil
    end
  end
end

--- Count occurrences of each value of `list`: returns a map value -> count.
function helper.tally(list, field)
  local t = {}
  for _, v in ipairs(list) do
    local k = field and v[field] or v
    t[k] = (t[k] or 0) + 1
  end
  return t
end

return helper
