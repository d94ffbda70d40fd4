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
--   SIGCHLD       reap; a worker that died is restarted: at once if it was
--                 killed from outside (kill -9, the OOM killer) or had run a
--                 while; after a growing delay if it died on its own right
--                 after starting (a crash loop is reported and slowed down,
--                 never spun).  The jobs it held go back to run at once
--                 (abandon(worker id)) instead of when their lease expires;
--                 a release that fails (the database restarting) or finds
--                 the worker still connected is tried again, with backoff,
--                 until it works, after the restarts.
--   SIGINT/TERM   graceful stop: SIGTERM to every worker, which stops
--                 claiming, finishes the job in hand and hands back the rest
--                 (scheduler.run's own stop); exit 0 once all have exited.  A
--                 second SIGINT/SIGTERM (or --stop-timeout passing) kills the
--                 workers at once, releases their jobs and exits 1.
--   SIGHUP        reload: the files are checked again; if they are fine, N new
--                 workers start and the old ones stop gracefully; if not, the
--                 error is logged and the running workers stay.
-- Workers ignore SIGHUP and, on Linux, get SIGTERM if the supervisor dies.
--
-- Process groups.  Each worker leads its own session and process group
-- (process.spawn), so a terminal's Ctrl-C reaches the supervisor only (it
-- forwards the stop), and a kill reaches everything a worker's listeners
-- started: a forced stop sends SIGKILL to each worker's group, and a worker
-- that died any other way than a clean exit has its group killed when it is
-- reaped (a listener's `sleep 6; echo late >> f` would otherwise go on
-- working for a job that is being released to run again).
--
-- Service manager.  Under systemd's Type=notify ($NOTIFY_SOCKET) the
-- supervisor sends READY=1 once every worker runs: each one, once connected
-- and about to enter its loop, sends SIGRTMIN to the supervisor (named by
-- LUA_SCHEDULER_SUPERVISOR, so a worker whose supervisor died signals no
-- other process; the supervisor takes it with the others, synchronously: a
-- real-time signal, so two workers' at once are not merged into one);
-- STATUS= with what it is doing or what is wrong ("waiting for the
-- database: ...", "waiting for 1 of 4 workers to connect", "running 4
-- workers", "worker 2 is crash-looping (...)"); WATCHDOG=1 every
-- WATCHDOG_USEC/2 while it is healthy (past the database wait, no worker
-- crash-looping; a database outage while running is the workers' to wait
-- out, with their jobs in hand: no reason for a restart); STOPPING=1 when
-- it stops.
--
-- A worker's id is "<host>:<pid>:<suffix>" (the library's default), with a
-- random suffix that the supervisor picks and hands to the worker
-- (--id-suffix), so the supervisor knows it from the pid, and two hosts that
-- share a hostname and pids (containers) never share an id.  Log lines
-- (stderr) carry it, and the worker number.

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
-- Signals that come from outside the process (an operator's kill, the OOM
-- killer, a container runtime): a worker killed by one did not fail, so it
-- is restarted at once and its death is no step of a crash loop.  An exit
-- status, or a signal a process raises on itself (SEGV, ABRT, BUS, FPE,
-- ILL, SYS, TRAP...), is a death of its own.
local OUTSIDE = { KILL = true, TERM = true, INT = true, HUP = true, QUIT = true, USR1 = true,
  USR2 = true, ALRM = true }
-- ...unless it is killed so again and again right after starting (the OOM
-- killer at start-up): from the QUICK_KILLS-th time in a row within
-- QUICK_KILL seconds of its start, the crash loop's delays apply.
local QUICK_KILL, QUICK_KILLS = 1, 5
-- A release (abandon) that failed, or found the worker still connected, is
-- tried again after the first delay, doubling up to the second.  When the
-- supervisor exits, pending releases get RELEASE_AT_EXIT seconds more.
local RELEASE_RETRY = { 0.1, 5 }
local RELEASE_AT_EXIT = 5

-- Under a service manager, STATUS= is brought up to date at least this
-- often (seconds; a crash loop that ended, say).
local STATUS_EVERY = 5
-- A worker that cannot connect at start tries again this often (growing).
local WORKER_DB_RETRY = { 0.1, 1 }

local function host_of(worker_id)
  return worker_id:match("^(.*):%d+:%w+$") or worker_id:match("^(.*):%d+$") or worker_id
end

-- A job's fields (the log function's third argument, see scheduler.lua)
-- as JSON keys, in this order.
local JOB_FIELDS = { { "event", "event" }, { "job_id", "job_id" }, { "name", "job_name" },
  { "attempt", "attempt" }, { "duration", "duration" }, { "outcome", "outcome" },
  { "retry_in", "retry_in" } }

--- A log function(level, message [, fields]) writing one line per message
-- to stderr, as text or JSON.  `who`: { process = "supervisor" | "worker",
-- worker = n, id = "host:pid:suffix" }.  `fields` (a job's start or end):
-- JSON keys event, job_id, job_name, attempt, duration (seconds), outcome,
-- retry_in; the text line's message says the same.
function run.make_log(level, format, who)
  local threshold = LEVELS[level]
  local tag = who.process == "worker" and ("worker %d %s"):format(who.worker, who.id)
    or ("supervisor %s"):format(who.id)
  return function(lvl, message, fields)
    if (LEVELS[lvl] or 4) < threshold then return end
    local now = scheduler.now()
    local line
    if format == "json" then
      local kv = { "time", text.utc_time(now), "level", lvl, "process", who.process,
        "worker", who.worker or text.null, "worker_id", who.id, "message", tostring(message) }
      if type(fields) == "table" then
        for _, f in ipairs(JOB_FIELDS) do
          local v = fields[f[1]]
          if v ~= nil then kv[#kv + 1], kv[#kv + 2] = f[2], v end
        end
      end
      line = text.json(text.object(table.unpack(kv)))
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
  local id = core.default_worker_id(o.id_suffix)
  local log = run.make_log(o.log_level, o.log_format, { process = "worker", worker = o.slot, id = id })
  local database = os.getenv("LUA_SCHEDULER_DATABASE")
  if not database or database == "" then
    log("error", "no database (LUA_SCHEDULER_DATABASE is not set)")
    return 2
  end
  local ok, err = pcall(scheduler.configure, { database = database, worker_id = id, log = log,
    log_level = o.log_level, concurrency = o.concurrency })
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
  -- connected (the schema current) before it says so: the supervisor's
  -- readiness waits for this.  The supervisor has connected already, so
  -- this waits only on what refuses one more connection (max_connections);
  -- SIGTERM meanwhile ends the worker, which holds no job yet.
  local delay, last = WORKER_DB_RETRY[1], nil
  while true do
    local version, cerr = scheduler.schema_version()
    if version then break end
    cerr = errors.strip(tostring(cerr)):gsub("^scheduler: schema_version: ", "")
    if cerr ~= last then log("warn", "waiting for the database: " .. cerr) end
    last = cerr
    process.sleep(delay)
    delay = math.min(delay * 2, WORKER_DB_RETRY[2])
  end
  log("info", ("started: listeners %s"):format(listeners.names(found)))
  local supervisor = math.tointeger(tonumber(os.getenv("LUA_SCHEDULER_SUPERVISOR") or ""))
  if supervisor and supervisor > 1 and process.getppid() == supervisor then
    process.kill(supervisor, "RTMIN")
  end
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
local function worker_argv(o, slot, suffix)
  local argv = {}
  local lowest = 0
  while o.arg[lowest - 1] ~= nil do lowest = lowest - 1 end
  for i = lowest, 0 do argv[#argv + 1] = o.arg[i] end
  for _, a in ipairs { "__worker", "--slot", tostring(slot), "--id-suffix", suffix,
                       "--log-level", o.log_level, "--log-format", o.log_format,
                       "--concurrency", tostring(o.concurrency or 1), "--" } do
    argv[#argv + 1] = a
  end
  for _, p in ipairs(o.paths) do argv[#argv + 1] = p end
  return argv
end

--- Start the worker of `slot`; false if it could not be started (its
-- restart is then scheduled).
function Supervisor:start(slot)
  local suffix = core.random_suffix()
  local pid, err = process.spawn(worker_argv(self.o, slot, suffix),
    { LUA_SCHEDULER_DATABASE = self.o.database, LUA_SCHEDULER_SUPERVISOR = tostring(process.getpid()) })
  local state = self.slots[slot]
  if not pid then
    self.log("error", ("cannot start worker %d: %s"):format(slot, errors.strip(err)))
    self:died(slot, 0, "could not be started")
    return false
  end
  local w = { slot = slot, pid = pid, id = ("%s:%d:%s"):format(self.host, pid, suffix),
    started = process.monotonic() }
  state.worker, state.restart_at = w, nil
  self.by_pid[pid] = w
  self.log("info", ("started worker %d (pid %d)"):format(slot, pid))
  return true
end

--- A current worker (or its start) ended after `lived` seconds: schedule
-- its restart.  `outside`: it was killed from outside (see OUTSIDE).
function Supervisor:died(slot, lived, how, outside)
  local state = self.slots[slot]
  state.worker = nil
  if outside then
    state.quick_kills = lived < QUICK_KILL and (state.quick_kills or 0) + 1 or 0
    if state.quick_kills < QUICK_KILLS then
      state.restart_at = process.monotonic()
      self.log("info", ("restarting worker %d at once (killed from outside)"):format(slot))
      return
    end
  else
    state.quick_kills = 0
  end
  if lived >= STABLE_SECONDS then state.failures = 0 end
  state.last_death = how
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

--- Put back the jobs a worker that exited still held: queued, and tried by
-- release_due (after the restarts).
function Supervisor:release(w)
  self.releases[#self.releases + 1] = { w = w, at = process.monotonic(), delay = RELEASE_RETRY[1],
    tries = 0 }
end

--- Try the releases that are due.  One that fails (nil, err: the database
-- is restarting) or finds the worker still connected (false, err: its
-- session lives on, nothing released) is tried again later, with backoff,
-- until it works: its jobs would otherwise wait for their lease.
function Supervisor:release_due()
  local keep = {}
  for _, r in ipairs(self.releases) do
    if r.at > process.monotonic() then
      keep[#keep + 1] = r
    else
      local w = r.w
      r.tries = r.tries + 1
      local n, err = self.db:api():abandon(w.id)
      if n then
        if n > 0 or r.tries > 1 then
          self.log("info", ("released %d job%s held by worker %d (%s)%s"):format(n,
            n == 1 and "" or "s", w.slot, w.id, r.tries > 1 and (" at try %d"):format(r.tries) or ""))
        end
      else
        err = errors.strip(tostring(err))
        if err ~= r.err then -- once per cause, not at every try
          self.log(n == false and "info" or "warn", ("could not release the jobs of worker %d (%s)"
            .. " yet: %s; trying again until it works"):format(w.slot, w.id, err))
        end
        r.err = err
        r.at = process.monotonic() + r.delay
        r.delay = math.min(r.delay * 2, RELEASE_RETRY[2])
        keep[#keep + 1] = r
      end
    end
  end
  self.releases = keep
end

--- Exiting: the releases still pending get RELEASE_AT_EXIT seconds more (a
-- signal ends that); what is left then waits for its lease.
function Supervisor:finish_releases()
  local deadline = process.monotonic() + RELEASE_AT_EXIT
  while #self.releases > 0 and process.monotonic() < deadline do
    local sig = process.wait_signal(math.min(self:next_timer() or 0, deadline - process.monotonic()))
    if sig == "INT" or sig == "TERM" then break end
    self:reap() -- orphans, as PID 1
    self:release_due()
  end
  for _, r in ipairs(self.releases) do
    self.log("warn", ("could not release the jobs of worker %d (%s): %s; they run again when their"
      .. " lease expires"):format(r.w.slot, r.w.id, r.err or "not tried"))
  end
  self.releases = {}
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
      -- what its listeners started would work on for jobs being released
      -- (the group outlives its leader while a member lives, and its id is
      -- not reused meanwhile; ESRCH: nothing left)
      if not (how == "exit" and code == 0) then process.kill_group(pid, "KILL") end
      self:release(w)
      local what = describe_exit(how, code)
      local outside = how == "signal" and OUTSIDE[code] == true
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
        self:died(w.slot, process.monotonic() - w.started, what, outside)
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

--- Send `fields` ("READY=1", "STATUS=...", one per line) to the service
-- manager, if one listens ($NOTIFY_SOCKET); a failure is logged once.
function Supervisor:notify(fields)
  local ok, err = core.notify(fields)
  if ok == nil and not self.notify_failed then
    self.notify_failed = true
    self.log("warn", "cannot notify the service manager ($NOTIFY_SOCKET): " .. errors.strip(tostring(err)))
  end
end

--- The STATUS= line, sent when it changes.
function Supervisor:status(line)
  line = line:gsub("[\r\n]+", " ")
  if line ~= self.last_status then
    self.last_status = line
    self:notify("STATUS=" .. line)
  end
end

--- Healthy: running, and no worker is crash-looping (one that has run
-- STABLE_SECONDS since is past it).  Otherwise nil and why.
function Supervisor:health()
  local now = process.monotonic()
  for slot, state in ipairs(self.slots) do
    if state.failures >= CRASH_LOOP
        and not (state.worker and now - state.worker.started >= STABLE_SECONDS) then
      return nil, ("worker %d is crash-looping (%d exits in a row%s)"):format(slot, state.failures,
        state.last_death and ", last: it " .. state.last_death or "")
    end
  end
  return true
end

--- How many of the current workers run (said so with SIGRTMIN).
function Supervisor:running()
  local n = 0
  for _, state in ipairs(self.slots) do
    if state.worker and state.worker.ready then n = n + 1 end
  end
  return n
end

--- Keep the service manager up to date: READY=1 once every worker runs,
-- STATUS=, and WATCHDOG=1 when due and healthy.
function Supervisor:tick()
  if self.stopping then return end
  local ok, why = self:health()
  local n = self:running()
  if ok and n < #self.slots then
    why = ("waiting for %d of %d workers to connect"):format(#self.slots - n, #self.slots)
  end
  self:status(why or ("running %d worker%s"):format(#self.slots, #self.slots == 1 and "" or "s"))
  if not why and not self.ready_sent then
    self.ready_sent = true
    self:notify("READY=1")
  end
  if ok and self.watchdog and process.monotonic() >= self.watchdog_at then
    self:notify("WATCHDOG=1")
    self.watchdog_at = process.monotonic() + self.watchdog
  end
end

function Supervisor:stop(sig)
  if not self.stopping then
    self.stopping = true
    for _, state in ipairs(self.slots) do state.restart_at = nil end
    self.log("info", ("%s: stopping; waiting for %d worker%s to finish the job in hand"):format(
      sig, self:live(), self:live() == 1 and "" or "s"))
    self:signal_all("TERM")
    self:notify(("STOPPING=1\nSTATUS=stopping: waiting for %d worker%s to finish the job in hand")
      :format(self:live(), self:live() == 1 and "" or "s"))
    if self.o.stop_timeout then self.stop_at = process.monotonic() + self.o.stop_timeout end
  else
    self.forced, self.stop_at = true, nil
    self.log("warn", ("%s: stopping at once (killing %d worker%s and what they started)"):format(
      sig, self:live(), self:live() == 1 and "" or "s"))
    self:notify("STATUS=stopping at once")
    -- the whole group: a listener's child processes too
    for pid in pairs(self.by_pid) do process.kill_group(pid, "KILL") end
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
  if found then
    local declared, derr = listeners.declare(self.db:api(), found, self.o.cron_owner, self.log)
    if not declared then
      found, err = nil, "cannot declare the recurring schedules: " .. errors.strip(tostring(derr))
    end
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
    state.worker, state.restart_at, state.failures, state.quick_kills = nil, nil, 0, 0
  end
  self.retiring = self.retiring + old
  self.log("info", ("reload: listeners %s; starting %d new worker%s, stopping %d old one%s"
    .. " after the job in hand"):format(listeners.names(found), #self.slots,
    #self.slots == 1 and "" or "s", old, old == 1 and "" or "s"))
  for slot = 1, #self.slots do self:start(slot) end
  if self.retiring == 0 then self.log("info", "reload complete") end
end

--- Seconds until the next pending restart or release, or nil.
function Supervisor:next_timer()
  local soonest
  for _, state in ipairs(self.slots) do
    if state.restart_at and (not soonest or state.restart_at < soonest) then
      soonest = state.restart_at
    end
  end
  for _, r in ipairs(self.releases) do
    if not soonest or r.at < soonest then soonest = r.at end
  end
  for _, at in ipairs { self.stop_at or false, self.tick_at or false } do
    if at and (not soonest or at < soonest) then soonest = at end
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
    if err ~= last_err then self:status("waiting for the database: " .. err) end
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
-- log_format, arg, found (the checked listeners), cron_owner }.  Returns
-- the exit status.
function run.supervise(o)
  local id = core.default_worker_id()
  local log = run.make_log(o.log_level, o.log_format, { process = "supervisor", id = id })
  local self = setmetatable({
    o = o, log = log, host = host_of(id), slots = {}, by_pid = {}, retiring = 0, releases = {},
    db = db_access.new(o.database, log),
  }, Supervisor)
  for slot = 1, o.workers do self.slots[slot] = { failures = 0, quick_kills = 0 } end

  if o.arg[0] == nil then errors.failure("cannot start workers: arg[0] (the launcher) is unknown") end
  assert(process.block_signals())
  -- The database first: the schema is created or upgraded once, before the
  -- workers start.  The connection stays for abandon().
  if not self:wait_for_database() then
    self.db:close()
    return 0
  end
  -- the files' listeners on the supervisor's own instance, never run: the
  -- release of a dead worker's jobs (abandon) charges a crash against a
  -- listener's max_attempts as a worker's rescue would
  listeners.register(o.found, self.db:api())
  -- The files' recurring schedules: declared here, once for all the
  -- workers (which never declare them), and those of this owner that no
  -- file declares any more removed (listeners.declare).
  local declared, derr = listeners.declare(self.db:api(), o.found, o.cron_owner, log)
  if not declared then
    log("error", "cannot declare the recurring schedules of the listener files: "
      .. errors.strip(tostring(derr)))
    self.db:close()
    return 1
  end
  -- (the database by name: a shell without LUA_SCHEDULER_DATABASE uses ./scheduler.db)
  log("info", ("listeners %s; database %s ready; starting %d worker%s"):format(
    listeners.names(o.found), o.database_label or "", o.workers, o.workers == 1 and "" or "s"))

  -- WATCHDOG_PID, when set, names the process meant (not a worker's)
  local usec = math.tointeger(tonumber(os.getenv("WATCHDOG_USEC") or ""))
  local wpid = math.tointeger(tonumber(os.getenv("WATCHDOG_PID") or ""))
  if usec and usec > 0 and (not wpid or wpid == process.getpid()) then
    self.watchdog, self.watchdog_at = usec / 2e6, process.monotonic()
  end
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
    -- (a wake-up for the watchdog, or now and then for STATUS, when a
    -- service manager listens)
    self:tick()
    self.tick_at = nil
    if os.getenv("NOTIFY_SOCKET") then
      self.tick_at = math.min(process.monotonic() + STATUS_EVERY, self.watchdog_at or math.huge)
    end
    local sig, from = process.wait_signal(self:next_timer())
    self:reap()
    if sig == "RTMIN" then
      local w = self.by_pid[from]
      if w then w.ready = true end
    elseif sig == "INT" or sig == "TERM" then
      self:stop(self.stopping and ("second SIG" .. sig) or ("SIG" .. sig))
    elseif self.stop_at and process.monotonic() >= self.stop_at then
      self:stop(("stop timeout (%gs)"):format(self.o.stop_timeout))
    elseif sig == "HUP" and not self.stopping then
      self:reload()
    end
    self:restart_due() -- first: a release may wait for the database
    self:release_due()
  end
  self:finish_releases()
  self.db:close()
  -- the signals stay blocked: one more SIGTERM now must not kill the exit
  log("info", self.forced and "stopped at once" or "stopped")
  return self.forced and 1 or 0
end

return run
