--- scheduler.cli.run: `lua-scheduler run`, a supervisor and its workers.
--
-- Process model.  The process started by the user is the supervisor: it
-- loads and checks the listener files, checks the database (and creates or
-- upgrades the schema), then starts N workers with fork + exec of a fresh
-- interpreter running this same command in worker mode (`__worker`).  Each
-- worker loads the listener files itself, has its own Lua state and its own
-- connection, and runs scheduler.run().  The supervisor never runs jobs.
--
-- Signals.  The supervisor blocks SIGCHLD, SIGHUP, SIGINT and SIGTERM and
-- takes them one at a time (scheduler.core.process.wait_signal):
--   SIGCHLD       reap; a worker that died is restarted (at once if it had
--                 run a while, else after a growing delay: a crash loop is
--                 reported and slowed down, never spun), and the jobs it held
--                 go back to run at once (abandon(worker id)) instead of when
--                 their lease expires.
--   SIGINT/TERM   graceful stop: SIGTERM to every worker, which stops
--                 claiming, finishes the job in hand and hands back the rest
--                 (scheduler.run's own stop); exit 0 once all have exited.  A
--                 second SIGINT/SIGTERM kills the workers at once (SIGKILL),
--                 releases their jobs and exits 1.
--   SIGHUP        reload: the files are checked again; if they are fine, N new
--                 workers start and the old ones stop gracefully; if not, the
--                 error is logged and the running workers stay.
-- Workers ignore SIGHUP and, on Linux, get SIGTERM if the supervisor dies.
--
-- A worker's id is "<host>:<pid>" (the library's default), so the supervisor
-- knows it from the pid.  Log lines (stderr) carry it, and the worker number.

local core = require "scheduler.core"
local scheduler = require "scheduler"
local listeners = require "scheduler.cli.listeners"
local db_access = require "scheduler.cli.db"
local text = require "scheduler.cli.text"
local errors = require "scheduler.cli.errors"

local process = core.process

local run = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
run.LEVELS = LEVELS

-- A worker that ran this long before dying is restarted at once.
local STABLE_SECONDS = 10
-- Delays before restarting a worker that died young, by how many times in a
-- row it did; the last one repeats.  From CRASH_LOOP on it is reported as a
-- crash loop.
local RESTART_DELAYS = { 0.1, 0.5, 1, 2, 5, 10, 30, 60 }
local CRASH_LOOP = 3

local function host_of(worker_id)
  return worker_id:match("^(.*):%d+$") or worker_id
end

--- A log function(level, message) writing one line per message to stderr,
-- as text or JSON.  `who`: { process = "supervisor" | "worker", worker = n,
-- id = "host:pid" }.
function run.make_log(level, format, who)
  local threshold = LEVELS[level]
  local tag = who.process == "worker" and ("worker %d %s"):format(who.worker, who.id)
    or ("supervisor %s"):format(who.id)
  return function(lvl, message)
    if (LEVELS[lvl] or 4) < threshold then return end
    local now = scheduler.now()
    local line
    if format == "json" then
      line = text.json(text.object(
        "time", text.utc_time(now), "level", lvl, "process", who.process,
        "worker", who.worker or text.null, "worker_id", who.id, "message", tostring(message)))
    else
      line = ("%s %-5s [%s] %s"):format(text.utc_time(now), lvl, tag, tostring(message))
    end
    -- one write(2) per line: the workers share the supervisor's stderr, and
    -- lines written in pieces interleave (found by make test-faults)
    io.stderr:write(line .. "\n")
  end
end

---------------------------------------------------------------------------
-- worker
---------------------------------------------------------------------------

--- Worker mode: load the files, run until stopped.  Returns the exit
-- status: 0 stopped, 1 run() failed, 2 the files did not load.
function run.worker(o)
  io.stdout:setvbuf("line") -- listeners' print()s appear as they happen
  local id = core.default_worker_id()
  local log = run.make_log(o.log_level, o.log_format, { process = "worker", worker = o.slot, id = id })
  local database = os.getenv("LUA_SCHEDULER_DATABASE")
  if not database or database == "" then
    log("error", "no database (LUA_SCHEDULER_DATABASE is not set)")
    return 2
  end
  local ok, err = pcall(scheduler.configure, { database = database, worker_id = id, log = log })
  if not ok then
    log("error", tostring(err))
    return 2
  end
  local files, ferr = listeners.files(o.paths)
  local found
  if files then found, ferr = listeners.load(files) end
  if found then ok, ferr = listeners.register(found, scheduler) end
  if not found or not ok then
    log("error", ferr)
    return 2
  end
  log("info", ("started: listeners %s"):format(listeners.names(found)))
  local v, rerr = scheduler.run()
  if v then
    log("info", "stopped")
    return 0
  end
  log("error", tostring(rerr))
  return 1
end

---------------------------------------------------------------------------
-- supervisor
---------------------------------------------------------------------------

local Supervisor = {}
Supervisor.__index = Supervisor

--- The command line of a worker: this interpreter and launcher (arg[-n] ..
-- arg[0], e.g. "lua5.4", "bin/lua-scheduler") in worker mode.  The
-- database goes through the environment, not argv, so `ps` cannot show a
-- password.
local function worker_argv(o, slot)
  local argv = {}
  local lowest = 0
  while o.arg[lowest - 1] ~= nil do lowest = lowest - 1 end
  for i = lowest, 0 do argv[#argv + 1] = o.arg[i] end
  for _, a in ipairs { "__worker", "--slot", tostring(slot), "--log-level", o.log_level,
                       "--log-format", o.log_format, "--" } do
    argv[#argv + 1] = a
  end
  for _, p in ipairs(o.paths) do argv[#argv + 1] = p end
  return argv
end

--- Start the worker of `slot`; false if it could not be started (its
-- restart is then scheduled).
function Supervisor:start(slot)
  local pid, err = process.spawn(worker_argv(self.o, slot), { LUA_SCHEDULER_DATABASE = self.o.database })
  local state = self.slots[slot]
  if not pid then
    self.log("error", ("cannot start worker %d: %s"):format(slot, errors.strip(err)))
    self:died(slot, 0, "could not be started")
    return false
  end
  local w = { slot = slot, pid = pid, id = self.host .. ":" .. pid, started = process.monotonic() }
  state.worker, state.restart_at = w, nil
  self.by_pid[pid] = w
  self.log("info", ("started worker %d (pid %d)"):format(slot, pid))
  return true
end

--- A current worker (or its start) failed after `lived` seconds: schedule
-- its restart.
function Supervisor:died(slot, lived, how)
  local state = self.slots[slot]
  state.worker = nil
  if lived >= STABLE_SECONDS then state.failures = 0 end
  state.failures = state.failures + 1
  local delay = RESTART_DELAYS[math.min(state.failures, #RESTART_DELAYS)]
  state.restart_at = process.monotonic() + delay
  if state.failures >= CRASH_LOOP then
    self.log("error", ("worker %d is crash-looping: %d exits in a row within %d s of starting"
      .. " (last: %s); next start in %s"):format(slot, state.failures, STABLE_SECONDS, how,
      delay < 60 and ("%gs"):format(delay) or text.duration(delay)))
  else
    self.log("info", ("restarting worker %d in %.1f s"):format(slot, delay))
  end
end

--- Put back the jobs a worker that exited still held.
function Supervisor:release(w)
  local n, err = self.db:api():abandon(w.id)
  if n == nil then
    self.log("warn", ("could not release the jobs of worker %d (%s): %s; they run again when"
      .. " their lease expires"):format(w.slot, w.id, tostring(err)))
  elseif n > 0 then
    self.log("info", ("released %d job%s held by worker %d (%s)"):format(n, n == 1 and "" or "s",
      w.slot, w.id))
  end
end

local function describe_exit(how, code)
  if how == "exit" then return "exited with status " .. tostring(code) end
  return "was killed by signal " .. tostring(code)
end

function Supervisor:reap()
  while true do
    local pid, how, code = process.reap()
    if not pid then return end
    local w = self.by_pid[pid]
    if w then
      self.by_pid[pid] = nil
      self:release(w)
      local what = describe_exit(how, code)
      if w.retiring then
        self.retiring = self.retiring - 1
        self.log("info", ("old worker %d (pid %d) %s"):format(w.slot, pid, what))
        if self.retiring == 0 and not self.stopping then self.log("info", "reload complete") end
      elseif self.stopping then
        self.slots[w.slot].worker = nil
        self.log(how == "exit" and code == 0 and "info" or "warn",
          ("worker %d (pid %d) %s"):format(w.slot, pid, what))
      else
        self.log("warn", ("worker %d (pid %d) %s"):format(w.slot, pid, what))
        self:died(w.slot, process.monotonic() - w.started, what)
      end
    end
    -- else: not ours (as PID 1 in a container we also reap orphans)
  end
end

function Supervisor:live()
  local n = 0
  for _ in pairs(self.by_pid) do n = n + 1 end
  return n
end

function Supervisor:signal_all(sig)
  for pid in pairs(self.by_pid) do process.kill(pid, sig) end
end

function Supervisor:stop(sig)
  if not self.stopping then
    self.stopping = true
    for _, state in ipairs(self.slots) do state.restart_at = nil end
    self.log("info", ("%s: stopping; waiting for %d worker%s to finish the job in hand"):format(
      sig, self:live(), self:live() == 1 and "" or "s"))
    self:signal_all("TERM")
  else
    self.forced = true
    self.log("warn", ("second %s: stopping at once (killing %d worker%s)"):format(
      sig, self:live(), self:live() == 1 and "" or "s"))
    self:signal_all("KILL")
  end
end

function Supervisor:reload()
  self.log("info", "SIGHUP: reloading the listener files")
  local found, err
  local files, ferr = listeners.files(self.o.paths)
  if files then found, err = listeners.load(files) else err = ferr end
  if found then
    local checked, cerr = listeners.check(found, self.o.database)
    if not checked then found, err = nil, cerr end
  end
  if not found then
    self.log("error", "reload failed, the running workers stay: " .. err)
    return
  end
  local old = 0
  for _, state in ipairs(self.slots) do
    if state.worker then
      state.worker.retiring = true
      process.kill(state.worker.pid, "TERM")
      old = old + 1
    end
    state.worker, state.restart_at, state.failures = nil, nil, 0
  end
  self.retiring = self.retiring + old
  self.log("info", ("reload: listeners %s; starting %d new worker%s, stopping %d old one%s"
    .. " after the job in hand"):format(listeners.names(found), #self.slots,
    #self.slots == 1 and "" or "s", old, old == 1 and "" or "s"))
  for slot = 1, #self.slots do self:start(slot) end
  if self.retiring == 0 then self.log("info", "reload complete") end
end

--- Seconds until the next pending restart, or nil.
function Supervisor:next_timer()
  local soonest
  for _, state in ipairs(self.slots) do
    if state.restart_at and (not soonest or state.restart_at < soonest) then
      soonest = state.restart_at
    end
  end
  return soonest and math.max(0, soonest - process.monotonic())
end

function Supervisor:restart_due()
  local now = process.monotonic()
  for slot, state in ipairs(self.slots) do
    if state.restart_at and state.restart_at <= now and not self.stopping then
      self:start(slot)
    end
  end
end

-- While the database cannot be reached at start-up, try again this often
-- (growing from the first value to the second), and repeat the reason in
-- the log this often.
local DB_RETRY = { 0.1, 1 }
local DB_REPEAT_LOG = 30

--- Wait until the database answers (a server that is not up yet, a
-- database not created yet, a role not granted yet...), logging why it
-- does not; SIGINT/SIGTERM end the wait.  Returns true when it answered,
-- false when stopped.
function Supervisor:wait_for_database()
  local started = process.monotonic()
  local delay, last_err, logged_at = DB_RETRY[1], nil, nil
  while true do
    local ok, err = self.db:ping()
    if ok then
      if last_err then
        self.log("info", ("the database answered after %.1f s"):format(process.monotonic() - started))
      end
      return true
    end
    local now = process.monotonic()
    if err ~= last_err or now - logged_at >= DB_REPEAT_LOG then
      if last_err then
        self.log("warn", ("still waiting for the database (%.0f s): %s"):format(now - started, err))
      else
        self.log("warn", "waiting for the database: " .. err)
      end
      last_err, logged_at = err, now
    end
    local sig = process.wait_signal(delay)
    if sig == "INT" or sig == "TERM" then
      self.log("info", ("SIG%s: stopped while waiting for the database"):format(sig))
      return false
    end
    delay = math.min(delay * 2, DB_RETRY[2])
  end
end

--- Supervisor mode.  `o`: { database, workers, paths, log_level,
-- log_format, arg, found (the checked listeners) }.  Returns the exit
-- status.
function run.supervise(o)
  local id = core.default_worker_id()
  local log = run.make_log(o.log_level, o.log_format, { process = "supervisor", id = id })
  local self = setmetatable({
    o = o, log = log, host = host_of(id), slots = {}, by_pid = {}, retiring = 0,
    db = db_access.new(o.database, log),
  }, Supervisor)
  for slot = 1, o.workers do self.slots[slot] = { failures = 0 } end

  if o.arg[0] == nil then errors.failure("cannot start workers: arg[0] (the launcher) is unknown") end
  assert(process.block_signals())
  -- The database first: the schema is created or upgraded once, before the
  -- workers start.  The connection stays for abandon().
  if not self:wait_for_database() then
    self.db:close()
    return 0
  end
  log("info", ("listeners %s; database ready; starting %d worker%s"):format(
    listeners.names(o.found), o.workers, o.workers == 1 and "" or "s"))

  for slot = 1, o.workers do
    if not self:start(slot) then
      -- the interpreter or launcher cannot be executed: no point retrying
      self:stop("startup failure")
      self.forced = true
      break
    end
  end
  while true do
    if self.stopping and self:live() == 0 then break end
    local sig = process.wait_signal(self:next_timer())
    self:reap()
    if sig == "INT" or sig == "TERM" then
      self:stop("SIG" .. sig)
    elseif sig == "HUP" and not self.stopping then
      self:reload()
    end
    self:restart_due()
  end
  self.db:close()
  -- the signals stay blocked: one more SIGTERM now must not kill the exit
  log("info", self.forced and "stopped at once" or "stopped")
  return self.forced and 1 or 0
end

return run
