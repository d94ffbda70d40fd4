--- scheduler: a durable job scheduler; listeners are plain Lua functions.
--
-- This module holds policy: argument checking, option defaults, the retry
-- backoff, log formatting and the default instance.  The mechanism (the
-- database, the wait loop, protected listener calls) is the C module
-- `scheduler.core`.
--
-- Conventions: programmer errors (wrong types, unknown options, use after
-- close) raise; runtime failures return nil, "scheduler: <what>: <detail>".

local core = require "scheduler.core"
local concurrent = require "scheduler.concurrent"
local cron = require "scheduler.cron"
local tz = require "scheduler.tz"
local text = require "scheduler.cli.text"

local M = { _VERSION = "lua-scheduler " .. core._VERSION }

local DEFAULT_LEASE = 30
--- The database used when neither the `database` option nor the environment
-- variable LUA_SCHEDULER_DATABASE gives one.
M.DEFAULT_DATABASE = "sqlite:scheduler.db"
local DEFAULT_MAX_ATTEMPTS = 25
local MAX_INT32 = 2147483647
local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local Scheduler = {}
Scheduler.__index = Scheduler
Scheduler.__name = "scheduler.Scheduler"

--- Seconds before attempt `attempt + 1`: 2, 4, 8, ... capped at 6 hours,
-- with +-25% jitter so that failures do not retry in lockstep.
function M.default_backoff(attempt)
  local base = math.min(2.0 ^ attempt, 21600)
  return base * (0.75 + 0.5 * math.random())
end

local function raise(level, fmt, ...)
  error("scheduler: " .. string.format(fmt, ...), level + 1)
end

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local function is_finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

--- Check an options table against `allowed` (name -> true); raise on an
-- unknown name, naming the function.
local function check_options(fname, opts, allowed, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    raise(level + 1, "%s: options must be a table, got %s", fname, type(opts))
  end
  for k in pairs(opts) do
    if not allowed[k] then
      raise(level + 1, "%s: unknown option %q", fname, tostring(k))
    end
  end
  return opts
end

local function check_name(fname, name, level)
  if type(name) ~= "string" then
    raise(level + 1, "%s: the job name must be a string, got %s", fname, type(name))
  end
  if name == "" then raise(level + 1, "%s: the job name must not be empty", fname) end
  -- PostgreSQL refuses invalid UTF-8 text: refuse it on every backend
  if not utf8.len(name) then raise(level + 1, "%s: the job name is not valid UTF-8", fname) end
end

--- A listener's (or the instance's default) time limit: nil or a positive
-- finite number of seconds.
local function check_timeout(fname, v, level)
  if v ~= nil and (not is_finite(v) or v <= 0) then
    raise(level + 1, "%s: timeout must be a positive number of seconds, got %s", fname, tostring(v))
  end
  return v
end

local function check_int(fname, what, v, min, level)
  if math.type(v) ~= "integer" then
    if math.type(v) == "float" and v == math.floor(v) and v >= min and v <= MAX_INT32 then
      return math.tointeger(v)
    end
    raise(level + 1, "%s: %s must be an integer, got %s", fname, what, tostring(v))
  end
  if v < min or v > MAX_INT32 then
    raise(level + 1, "%s: %s must be between %d and %d, got %d", fname, what, min, MAX_INT32, v)
  end
  return v
end

local function check_id(fname, id, level)
  if math.type(id) ~= "integer" then
    raise(level + 1, "%s: the job id must be an integer, got %s", fname, tostring(id))
  end
  return id
end

--- The log function for option `log` (nil: "info" to stderr; false: none;
-- a level name; or a function(level, message)).
local function make_log(log, worker_id)
  if log == false then return nil end
  if type(log) == "function" then return log end
  local threshold = LEVELS[log or "info"]
  if not threshold then
    raise(4, "configure: log must be false, a function or one of debug, info, warn, error; got %s",
      tostring(log))
  end
  return function(level, message)
    if (LEVELS[level] or 4) >= threshold then
      -- one write(2) per line: lines of processes sharing stderr never mix
      io.stderr:write(table.concat { os.date("!%Y-%m-%dT%H:%M:%SZ"), " lua-scheduler[", worker_id, "] ",
        level, ": ", tostring(message), "\n" })
    end
  end
end

-- The most jobs one claim takes (core.c checks the same bound).
local MAX_BATCH = 100000

local CONFIG_OPTIONS = {
  database = true, worker_id = true, lease = true, max_attempts = true,
  backoff = true, log = true, log_level = true, timeout = true, batch_max = true, concurrency = true,
  history = true,
}

--- How long history keeps finished jobs: a number of seconds or a duration
-- ("7d", "12h", "1h30m"); 0, "0" or false: not at all.
local function check_history(fname, v, level)
  if v == false then return 0 end
  local secs, why = v, nil
  if type(v) == "string" then secs, why = text.parse_duration(v) end
  if type(secs) ~= "number" or secs ~= secs or secs < 0 or secs == math.huge then
    raise(level + 1, "%s: history must be a duration (like \"7d\" or \"12h\"), seconds or false, got %s%s",
      fname, type(v) == "string" and ("%q"):format(v) or tostring(v), why and (": " .. why) or "")
  end
  return secs
end
-- The most listeners one worker runs at once (core.c checks the same bound).
local MAX_CONCURRENCY = 100000

-- Recurring schedules ------------------------------------------------------

-- A slot more than CRON_GRACE seconds overdue counts as missed (no worker
-- was running); catch_up = false skips missed slots.  On-time slots become
-- jobs a second ahead, so a few seconds is plenty.
local CRON_GRACE = 10
-- backfill never creates more than this many jobs at once.
local CRON_MAX_BACKFILL = 1000
-- A schedule whose tick fails (e.g. its zone vanished) is retried after this.
local CRON_RETRY = 60

--- The slots of `sched` in [lo, now], at most `max` (the latest ones);
-- `from` is a known slot <= now at or before lo's first slot.
local function slots_between(sched, zone, from, lo, now, max)
  local s = from >= lo and from or sched:next(lo - 1, zone)
  local out, n = {}, 0
  while s and s <= now do
    n = n + 1
    out[(n - 1) % max + 1] = s
    s = sched:next(s, zone)
  end
  if n <= max then return out, 0 end
  -- keep the latest `max`, in order (out is a ring)
  local ordered = {}
  for i = 1, max do ordered[i] = out[(n + i - 1) % max + 1] end
  return ordered, n - max
end

--- The latest slot of `sched` in [from, now] (from is a slot <= now).
local function latest_slot(sched, zone, from, now)
  local window = 60
  while now - window > from do
    local s = sched:next(now - window - 1, zone)
    if s and s <= now then
      local n = sched:next(s, zone)
      while n and n <= now do s, n = n, sched:next(n, zone) end
      return s
    end
    window = window * 4
  end
  local s, n = from, sched:next(from, zone)
  while n and n <= now do s, n = n, sched:next(n, zone) end
  return s
end

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

--- Turn one due schedule into jobs per its catch-up policy, and advance it.
-- `now` is the database clock; slots up to `now + ahead` become jobs (a
-- job for a slot still ahead waits for its time like any other).
local function fire_schedule(c, row, now, ahead, log)
  local sched, zone = cron.parse(row.expr), tz.get(row.tz)
  local slots, skipped
  local upto = now + ahead
  if row.backfill then
    slots, skipped = slots_between(sched, zone, row.next_at, math.max(row.next_at, now - row.backfill),
      upto, CRON_MAX_BACKFILL)
    local before = row.next_at < now - row.backfill
    if (skipped > 0 or before) and log then
      log("warn", string.format("cron %q: slots since %s were missed; ran %d of them (backfill %gs)",
        row.id, iso(row.next_at), #slots, row.backfill))
    end
  else
    local latest = latest_slot(sched, zone, row.next_at, upto)
    local missed = now - latest > CRON_GRACE or latest > row.next_at
    if row.catch_up or now - latest <= CRON_GRACE then
      slots = { latest }
      if missed and log then
        log("warn", string.format("cron %q: slots since %s were missed; ran the latest (%s) once",
          row.id, iso(row.next_at), iso(latest)))
      end
    else
      slots = {}
      if log then
        log("warn", string.format("cron %q: skipped the slots missed since %s (catch_up = false)",
          row.id, iso(row.next_at)))
      end
    end
  end
  local next_at = sched:next(upto, zone) or math.huge
  return c:cron_fire(row.id, row.next_at, slots, next_at)
end

--- The tick run() calls when a schedule is due: each due schedule of this
-- worker's listeners becomes jobs; one failing schedule does not stop the
-- others (it is retried in CRON_RETRY seconds, and logged).
local function make_tick(log)
  return function(c, ahead)
    local rows, now = c:crons(ahead)
    if not rows then error(now, 0) end
    for _, row in ipairs(rows) do
      local ok, err = pcall(fire_schedule, c, row, now, ahead, log)
      if not ok or err == nil then
        if log then log("error", string.format("cron %q: %s", row.id, tostring(err))) end
        if not ok then c:cron_fire(row.id, row.next_at, {}, now + CRON_RETRY) end
      end
    end
  end
end

--- Build the C core for validated options, sharing `listeners`, `limits`
-- (max_attempts) and `timeouts` with the instance.
local function build(opts, listeners, limits, timeouts, level)
  opts = check_options("configure", opts, CONFIG_OPTIONS, level + 1)
  -- Nothing configured: an SQLite file in the working directory, so that a
  -- script works with no server and no setup.
  local database = opts.database or os.getenv("LUA_SCHEDULER_DATABASE") or M.DEFAULT_DATABASE
  if type(database) ~= "string" or database == "" then
    raise(level + 1, "configure: database must be a non-empty string")
  end
  if opts.worker_id ~= nil and (type(opts.worker_id) ~= "string" or opts.worker_id == "") then
    raise(level + 1, "configure: worker_id must be a non-empty string")
  end
  local lease = opts.lease or DEFAULT_LEASE
  if not is_finite(lease) or lease <= 0 then
    raise(level + 1, "configure: lease must be a positive number of seconds, got %s", tostring(lease))
  end
  local max_attempts = check_int("configure", "max_attempts",
    opts.max_attempts or DEFAULT_MAX_ATTEMPTS, 1, level + 1)
  if opts.backoff ~= nil and not is_callable(opts.backoff) then
    raise(level + 1, "configure: backoff must be a function(attempt) -> seconds")
  end
  if opts.log ~= nil and opts.log ~= false and type(opts.log) ~= "function"
      and type(opts.log) ~= "string" then
    raise(level + 1, "configure: log must be false, a function or a level name")
  end
  local timeout = check_timeout("configure", opts.timeout, level + 1)
  local history = opts.history ~= nil and check_history("configure", opts.history, level + 1) or 0
  local batch_max = opts.batch_max
  if batch_max ~= nil then
    batch_max = check_int("configure", "batch_max", batch_max, 1, level + 1)
    if batch_max > MAX_BATCH then
      raise(level + 1, "configure: batch_max must be between 1 and %d, got %d", MAX_BATCH, batch_max)
    end
  end

  local concurrency = check_int("configure", "concurrency", opts.concurrency or 1, 1, level + 1)
  if concurrency > MAX_CONCURRENCY then
    raise(level + 1, "configure: concurrency must be between 1 and %d, got %d", MAX_CONCURRENCY, concurrency)
  end
  local worker_id = opts.worker_id or core.default_worker_id()
  local log = make_log(opts.log, worker_id)
  -- Each job's start and success are logged at debug: the lines are built
  -- only when the log wants them (a level name "debug", or a function with
  -- log_level = "debug"), so that at the default level a success costs
  -- nothing.  Failures are logged at any level.
  if opts.log_level ~= nil and not LEVELS[opts.log_level] then
    raise(level + 1, "configure: log_level must be one of debug, info, warn, error; got %s",
      tostring(opts.log_level))
  end
  local log_debug = log ~= nil and (opts.log == "debug"
    or (type(opts.log) == "function" and opts.log_level == "debug"))
  local user_backoff = opts.backoff
  local backoff = M.default_backoff
  if user_backoff then
    -- A broken backoff function must not break the loop: fall back, say so.
    backoff = function(attempt)
      local ok, d = pcall(user_backoff, attempt)
      if ok and is_finite(d) and d >= 0 then return d end
      if log then
        log("error", string.format("backoff(%d) returned %s; using the default",
          attempt, ok and tostring(d) or ("an error: " .. tostring(d))))
      end
      return M.default_backoff(attempt)
    end
  end
  local c, err = core.new {
    database = database, worker_id = worker_id, lease = lease, max_attempts = max_attempts,
    timeout = timeout, batch_max = batch_max, listeners = listeners, limits = limits,
    timeouts = timeouts, history = history,
    backoff = backoff, log = log, log_debug = log_debug, tick = make_tick(log),
  }
  if not c then raise(level + 1, "%s", (err:gsub("^scheduler: ", ""))) end
  return c, concurrency, log, log_debug, worker_id
end

local function new_instance(opts, level)
  local self = setmetatable({ _listeners = {}, _limits = {}, _timeouts = {}, _slots = {},
    _histories = {} }, Scheduler)
  self._core, self._concurrency, self._log, self._log_debug, self._worker_id = build(opts, self._listeners, self._limits, self._timeouts,
    level + 1)
  return self
end

local function check_self(self, fname)
  if getmetatable(self) ~= Scheduler then
    raise(3, "%s: call it as a method, s:%s(...)", fname, fname)
  end
  return self._core
end

--- Register (or replace) the listener for `name`: fn(payload, job).
-- opts.max_attempts overrides the instance default for jobs of this name;
-- opts.timeout (seconds) stops a call that runs longer (the instance's
-- `timeout` applies when it is not given); opts.concurrency: at most that
-- many jobs of this name at once in a worker with `concurrency` above 1
-- (within the instance's).
function Scheduler:on(name, fn, opts)
  local c = check_self(self, "on")
  check_name("on", name, 2)
  -- a listener for a name no job can have would also break claims
  if name:find("\0", 1, true) then raise(2, "on: the job name must not contain NUL bytes") end
  if not is_callable(fn) then
    raise(2, "on: the listener must be a function or callable table, got %s", type(fn))
  end
  opts = check_options("on", opts,
    { max_attempts = true, timeout = true, concurrency = true, history = true }, 2)
  -- history: this name's own (nil: the instance's)
  local history = opts.history ~= nil and check_history("on", opts.history, 2) or nil
  local max = opts.max_attempts and check_int("on", "max_attempts", opts.max_attempts, 1, 2)
  local slots = opts.concurrency and check_int("on", "concurrency", opts.concurrency, 1, 2)
  if slots and slots > MAX_CONCURRENCY then
    raise(2, "on: concurrency must be between 1 and %d, got %d", MAX_CONCURRENCY, slots)
  end
  c:on(name, fn, max, check_timeout("on", opts.timeout, 2), slots, history)
  self._slots[name] = slots
  self._histories[name] = history
end

--- Remove the listener for `name`.
function Scheduler:off(name)
  local c = check_self(self, "off")
  check_name("off", name, 2)
  c:off(name)
  self._slots[name] = nil
  self._histories[name] = nil
end

local WHEN_OPTIONS = { at = true, delay = true, key = true, priority = true, max_attempts = true }

--- Check schedule()'s `when` (nil, Unix seconds, or an options table) and
-- return at, delay, key, priority, max_attempts.
local function parse_when(fname, when, level)
  if when == nil then return nil end
  if type(when) == "number" then
    if not is_finite(when) then raise(level + 1, "%s: the time must be a finite number, got %s", fname, when) end
    return when
  end
  if type(when) ~= "table" then
    raise(level + 1, "%s: when must be nil, a number or a table, got %s", fname, type(when))
  end
  check_options(fname, when, WHEN_OPTIONS, level + 1)
  local at, delay, key = when.at, when.delay, when.key
  if at ~= nil and delay ~= nil then raise(level + 1, "%s: give at or delay, not both", fname) end
  if at ~= nil and not is_finite(at) then
    raise(level + 1, "%s: at must be a finite number (Unix seconds), got %s", fname, tostring(at))
  end
  if delay ~= nil and not is_finite(delay) then
    raise(level + 1, "%s: delay must be a finite number of seconds, got %s", fname, tostring(delay))
  end
  if key ~= nil and (type(key) ~= "string" or key == "") then
    raise(level + 1, "%s: key must be a non-empty string, got %s", fname, type(key))
  end
  if key ~= nil and not utf8.len(key) then raise(level + 1, "%s: key is not valid UTF-8", fname) end
  local priority = when.priority ~= nil and check_int(fname, "priority", when.priority, 0, level + 1) or nil
  local max_attempts = when.max_attempts ~= nil
    and check_int(fname, "max_attempts", when.max_attempts, 1, level + 1) or nil
  return at, delay, key, priority, max_attempts
end

--- Schedule job `name` with `payload`.  `when`: nil (now), absolute Unix
-- seconds, or { at = t | delay = s, key =, priority =, max_attempts = }.
-- Returns the id once the job is durably stored, or nil, err.
function Scheduler:schedule(name, payload, when)
  local c = check_self(self, "schedule")
  check_name("schedule", name, 2)
  local at, delay, key, priority, max_attempts = parse_when("schedule", when, 2)
  -- in a coroutine of the loop a concurrent worker lives in: the loop
  -- runs on while the database answers
  if self._flight and self._flight.waiter and coroutine.isyieldable() then
    return concurrent.schedule(self, name, payload, at, delay, key, priority, max_attempts)
  end
  return c:schedule(name, payload, at, delay, key, priority, max_attempts)
end

--- Schedule many jobs in one transaction: `list` is an array of
-- { name, payload [, when] } (the arguments of schedule()).  Returns the
-- array of their ids, in order, once all are durably stored; or nil, err and
-- none is stored.
function Scheduler:schedule_many(list)
  local c = check_self(self, "schedule_many")
  if type(list) ~= "table" then raise(2, "schedule_many: expects an array of {name, payload, when}") end
  -- the core reads each item's name and payload itself; `whens` holds the
  -- parsed `when` of the items that have one
  local whens = {}
  local checked = whens -- no name is this table
  for i = 1, #list do
    local e = list[i]
    if type(e) ~= "table" then raise(2, "schedule_many: item %d is not a table", i) end
    local name = e[1]
    if name ~= checked then -- lists often repeat one name: check each once
      check_name("schedule_many: item " .. i, name, 2)
      checked = name
    end
    if e[3] ~= nil then
      local at, delay, key, priority, max_attempts = parse_when("schedule_many: item " .. i, e[3], 2)
      whens[i] = { at = at, delay = delay, key = key, priority = priority, max_attempts = max_attempts }
    end
  end
  return c:schedule_many(list, whens)
end

--- Remove a waiting job: true if one was removed.
function Scheduler:cancel(id)
  return check_self(self, "cancel"):cancel(check_id("cancel", id, 2))
end

-- The fields history adds to a job's record.
local HISTORY_FIELDS = { "worker", "started_at", "finished_at", "duration", "kept_until" }

--- The job's current record, or nil when it no longer exists.  With
-- history (configure{history}), a finished job's last record is kept:
-- state "done", "failed" or "cancelled", with worker, started_at,
-- finished_at, duration and last_error; a failed job still in the queue
-- gets those fields of its last run.
function Scheduler:job(id)
  local c = check_self(self, "job")
  id = check_id("job", id, 2)
  local j, err = c:job(id)
  if err then return nil, err end
  if j and j.state ~= "failed" then return j end
  local rows, herr = c:history(nil, nil, id, 1)
  if not rows then
    if j then return j end
    return nil, herr
  end
  local h = rows[1]
  if not h then return j end
  if not j then return h end
  if h.state == "failed" then
    for _, f in ipairs(HISTORY_FIELDS) do j[f] = h[f] end
  end
  return j
end

--- Put a failed job back to run now: true if it was failed.
function Scheduler:retry(id)
  return check_self(self, "retry"):retry(check_id("retry", id, 2))
end

--- The jobs held by worker `worker_id`, known to be dead (e.g. its
-- supervisor saw it exit), go back to run now instead of when their lease
-- expires.  Returns how many; false, err when the worker is still
-- connected to the database (PostgreSQL: nothing is released, try again
-- later); or nil, err.
function Scheduler:abandon(worker_id)
  local c = check_self(self, "abandon")
  if type(worker_id) ~= "string" or worker_id == "" then
    raise(2, "abandon: worker_id must be a non-empty string")
  end
  return c:abandon(worker_id)
end

local STATES = { scheduled = true, running = true, failed = true, done = true, cancelled = true }

--- The jobs matching `filter` ({ state =, name =, id =, limit = }; each
-- field given must match), in the order they are due: an array of
-- { id, name, state, payload, run_at, attempt, max_attempts, priority, key,
-- last_error, locked_by, locked_until, created_at } (max_attempts: the
-- job's own, nil when it sets none), and the database's clock; or nil, err.
function Scheduler:jobs(filter)
  local c = check_self(self, "jobs")
  filter = check_options("jobs", filter, { state = true, name = true, id = true, limit = true }, 2)
  local state, name, id, limit = filter.state, filter.name, filter.id, filter.limit
  if state ~= nil and not STATES[state] then
    raise(2, "jobs: state must be \"scheduled\", \"running\", \"failed\", \"done\" or \"cancelled\", got %s",
      tostring(state))
  end
  if name ~= nil then check_name("jobs", name, 2) end
  if id ~= nil then check_id("jobs", id, 2) end
  if limit ~= nil then limit = check_int("jobs", "limit", limit, 1, 2) end
  if state == "done" or state == "cancelled" then
    -- finished jobs: history's, newest first (empty when history is off)
    local rows, err = c:history(state, name, id, limit)
    if not rows then return nil, err end
    return rows, c:db_now()
  end
  return c:jobs(state, name, id, limit)
end

--- Per job name: { name, due, later, running, failed, late, done_last_minute,
-- paused } (due: waiting although due; later: waiting for their time; late:
-- seconds the oldest due job has waited, nil when none is due;
-- done_last_minute: jobs completed in the last 60 seconds; paused: see
-- pause; a paused name without jobs has a row too; concurrency: its limit,
-- see limit, nil when none, and by, its partitions; rate and per: its rate
-- limit, nil when none; a limited name has a row too), in name order;
-- or nil, err.
function Scheduler:stats()
  local c = check_self(self, "stats")
  local rows, err = c:stats()
  if not rows then return nil, err end
  local paused
  paused, err = c:paused()
  if not paused then return nil, (tostring(err):gsub("^scheduler: paused:", "scheduler: stats:")) end
  -- every paused name has a row (one without jobs too), paused = true
  local is_paused = {}
  for _, name in ipairs(paused) do is_paused[name] = true end
  for _, r in ipairs(rows) do
    r.paused = is_paused[r.name] or false
    is_paused[r.name] = nil
  end
  local added = false
  for _, name in ipairs(paused) do
    if is_paused[name] then
      rows[#rows + 1] = { name = name, due = 0, later = 0, running = 0, failed = 0, done_last_minute = 0,
        paused = true }
      added = true
    end
  end
  -- and every limited name, with its limit (concurrency = N; nil: none)
  local limits
  limits, err = c:limits()
  if not limits then return nil, (tostring(err):gsub("^scheduler: limits:", "scheduler: stats:")) end
  if #limits > 0 then
    local by_name = {}
    for _, r in ipairs(rows) do by_name[r.name] = r end
    for _, l in ipairs(limits) do
      local r = by_name[l.name]
      if not r then
        r = { name = l.name, due = 0, later = 0, running = 0, failed = 0, done_last_minute = 0, paused = false }
        rows[#rows + 1] = r
        added = true
      end
      r.concurrency = l.concurrency
      r.by = l.by
      r.rate, r.per = l.rate, l.per
    end
  end
  if added then table.sort(rows, function(a, b) return a.name < b.name end) end
  return rows
end

--- Per job name, in name order: { name, done, failed }: the jobs completed
-- and the jobs failed for good since the database began counting (schema
-- PostgreSQL 13, SQLite 10), by every worker; they never go down (what
-- `metrics` exports as counters).  Or nil, err.
function Scheduler:totals()
  local c = check_self(self, "totals")
  return c:totals()
end

--- Per job name, in name order: { name, jobs, seconds }, how long the
-- listeners of the jobs history kept ran (each job that started counted
-- once, whatever history keeps since): jobs[k] ran at most bounds[k]
-- seconds and more than bounds[k - 1] (jobs[#bounds + 1]: longer);
-- seconds: their total.  Each row's `late` = { jobs, seconds }: the same
-- for how late they started (started_at less the run_at the claim saw,
-- at least 0), by late_bounds.  Returns rows, bounds, late_bounds; or
-- nil, err.  What `metrics` exports as
-- lua_scheduler_listener_duration_seconds and
-- lua_scheduler_job_start_lateness_seconds.
function Scheduler:durations()
  local c = check_self(self, "durations")
  return c:durations()
end

--- Delete the history of at most `limit` (default 1000) jobs whose time is
-- up, in one short transaction; returns how many rows (a row holds the
-- jobs of one write, up to a batch: limit/100 rows at most).  Workers with history on
-- do it on their own.
function Scheduler:prune_history(limit)
  local c = check_self(self, "prune_history")
  return c:prune(limit and check_int("prune_history", "limit", limit, 1, 2) or 1000)
end

--- Put every failed job (of opts.name, or of all names) back to run now
-- with a fresh set of attempts, as retry(id) does; a failed job whose key
-- another unfinished job holds stays failed.  Returns how many were
-- retried and how many kept, or nil, err.
function Scheduler:retry_failed(opts)
  local c = check_self(self, "retry_failed")
  opts = check_options("retry_failed", opts, { name = true }, 2)
  if opts.name ~= nil then check_name("retry_failed", opts.name, 2) end
  return c:retry_failed(opts.name)
end

-- Removal (delete, purge) never touches a running job,
-- nor a waiting one a worker has claimed (see store_removal in
-- csrc/store.h); errors come back as nil, err with the caller's name.
local function removed(fname, n, err)
  if n == nil then return nil, (tostring(err):gsub("^scheduler: remove:", "scheduler: " .. fname .. ":")) end
  return n
end

--- Delete a failed or waiting job: true if it was removed, false if there is
-- no such job or it is running (or nil, err).  A waiting job goes as with
-- cancel(id) (also one a worker has claimed and not started).
function Scheduler:delete(id)
  local c = check_self(self, "delete")
  id = check_id("delete", id, 2)
  local n, err = removed("delete", c:remove(id, nil, false, true, nil))
  if n == nil then return nil, err end
  if n > 0 then return true end
  local done, cerr = c:cancel(id)
  if done == nil then return nil, (tostring(cerr):gsub("^scheduler: cancel:", "scheduler: delete:")) end
  return done
end

--- Remove the waiting and failed jobs of opts.name (nil: of every name);
-- opts.state "scheduled" or "failed": only those; opts.older_than
-- (seconds): only jobs whose run_at (a failed job's: its last attempt's)
-- is longer ago than that.  Returns how many, or nil, err.  A running job
-- is never removed, nor a waiting one a worker has claimed (it is about to
-- run).
function Scheduler:purge(opts)
  local c = check_self(self, "purge")
  opts = check_options("purge", opts, { name = true, state = true, older_than = true }, 2)
  if opts.name ~= nil then check_name("purge", opts.name, 2) end
  local state = opts.state
  if state ~= nil and state ~= "scheduled" and state ~= "failed" then
    raise(2, "purge: state must be \"scheduled\" or \"failed\" (a running job is never"
      .. " removed), got %s", tostring(state))
  end
  local age = opts.older_than
  if age ~= nil and (type(age) ~= "number" or not is_finite(age) or age < 0) then
    raise(2, "purge: older_than must be a number of seconds >= 0, got %s", tostring(age))
  end
  return removed("purge", c:remove(nil, opts.name, state ~= "failed", state ~= "scheduled", age))
end

--- Pause job name `name` on every worker, durably (it stays paused across
-- restarts until resume): no worker starts a job of it from then on (jobs
-- claimed before the pause are handed back unattempted within a second;
-- running ones finish); new jobs of it are scheduled as usual and wait.
-- Returns true if it was not paused yet, false if it was; or nil, err.
function Scheduler:pause(name)
  local c = check_self(self, "pause")
  check_name("pause", name, 2)
  return c:pause(name, true)
end

--- Resume a paused job name: its due jobs start at once (the sleeping
-- workers are woken).  Returns true if it was paused, false if not; or
-- nil, err.
function Scheduler:resume(name)
  local c = check_self(self, "resume")
  check_name("resume", name, 2)
  return c:pause(name, false)
end

--- The paused job names, in name order (a list of strings), or nil, err.
function Scheduler:paused()
  return check_self(self, "paused"):paused()
end

--- The longest snooze, in seconds (30 days; csrc/dispatch.h SNOOZE_MAX):
-- a longer one is more likely a unit mistake than a wish.
local SNOOZE_MAX = 30 * 86400

--- The value a listener returns to be run again `seconds` from now
-- without counting an attempt (an HTTP 429's Retry-After):
-- `return scheduler.snooze(30)`.  Its next run sees the same job.attempt;
-- no error is recorded; max_attempts never turns a snooze into a failure.
-- 0: again at once, behind the due jobs of its priority.  Only the value
-- returned is a snooze (one snooze() made: a string or a table that looks
-- alike is not one).  A bad `seconds` raises, at the call.
local function snooze(seconds, level)
  if type(seconds) ~= "number" then
    raise(level + 1, "snooze: seconds must be a number, got %s%s", type(seconds),
      type(seconds) == "string" and " (tonumber() a Retry-After header first)" or "")
  end
  if not is_finite(seconds) then
    raise(level + 1, "snooze: seconds must be finite, got %s", seconds ~= seconds and "NaN" or tostring(seconds))
  end
  if seconds < 0 then raise(level + 1, "snooze: seconds must be 0 or more, got %s", tostring(seconds)) end
  if seconds > SNOOZE_MAX then
    raise(level + 1, "snooze: seconds must be at most %d (30 days), got %s", SNOOZE_MAX, tostring(seconds))
  end
  return core.snooze(seconds)
end

-- (not tail calls: the error levels count these frames)
function M.snooze(seconds)
  local v = snooze(seconds, 2)
  return v
end

--- s:snooze(seconds): the same, as a method (no database involved).
function Scheduler:snooze(seconds)
  check_self(self, "snooze")
  local v = snooze(seconds, 2)
  return v
end

--- Limit job name `name` across every worker and host: `opts` =
-- { concurrency = N } (at most N of its jobs running at once, all workers
-- together: a job claimed and not finished counts, started or not), with
-- `by = "key"` or `by = "<payload field>"` for each partition apart (the
-- job's key, or that top-level payload field's value as text; "" when it
-- has none); and/or { rate = N, per = SECONDS } (at most N of its jobs
-- start in any window of `per` seconds, smoothly: a token bucket with a
-- burst of max(1, N // 50), the rest spread evenly; see the README; the
-- jobs wait, never fail; with `by`, each partition's own); or nil (no
-- limit).  Durable;
-- a call replaces the name's limits.  Returns true if the limits changed,
-- false if not; or nil, err.
local LIMIT_KEYS = { concurrency = true, by = true, rate = true, per = true }
local RATE_PER_MAX = 31536000 -- STORE_RATE_PER_MAX (store.h)
function Scheduler:limit(name, opts)
  local c = check_self(self, "limit")
  check_name("limit", name, 2)
  if opts == nil then return c:limit(name, nil) end
  if type(opts) ~= "table" then
    raise(2, "limit: the limits must be a table ({ concurrency = N }) or nil, got %s", type(opts))
  end
  for k in pairs(opts) do
    if not LIMIT_KEYS[k] then
      raise(2, "limit: unknown option %s (known: concurrency, by, rate, per)", tostring(k))
    end
  end
  local by = opts.by
  if by ~= nil then
    if type(by) ~= "string" then
      raise(2, "limit: by must be \"key\" or a payload field's name (a string), got %s", type(by))
    end
    if by == "" or #by > 200 or by:find('[%z"\\]') then
      raise(2, "limit: by must be 1 to 200 bytes without NUL, '\"' or '\\', got %q", by)
    end
  end
  local rate, per = opts.rate, opts.per
  if (rate == nil) ~= (per == nil) then
    raise(2, "limit: rate and per go together (rate = N jobs per = SECONDS), got %s without %s",
      rate == nil and "per" or "rate", rate == nil and "rate" or "per")
  end
  if rate ~= nil then
    rate = check_int("limit", "rate", rate, 1, 2)
    if not is_finite(per) or per <= 0 or per > RATE_PER_MAX then
      raise(2, "limit: per must be a number of seconds above 0 and at most %d (a year), got %s",
        RATE_PER_MAX, tostring(per))
    end
  end
  if opts.concurrency == nil and rate == nil then
    raise(2, "limit: concurrency or rate is missing (nil lifts every limit: limit(name, nil))")
  end
  local n = opts.concurrency ~= nil and check_int("limit", "concurrency", opts.concurrency, 1, 2) or nil
  return c:limit(name, n, by, rate, per)
end

--- The limited job names, in name order: a list of { name, concurrency,
-- by, rate, per } (by nil: the whole name; concurrency or rate nil: none);
-- or nil, err.
function Scheduler:limits()
  return check_self(self, "limits"):limits()
end

--- The version of the database schema, once it is created or upgraded (as
-- any call does first); or nil, err.
function Scheduler:schema_version()
  return check_self(self, "schema_version"):schema_version()
end

local CRON_OPTIONS = { tz = true, catch_up = true, backfill = true, priority = true, max_attempts = true,
  owner = true }

local function check_owner(fname, owner, level)
  if owner ~= nil and (type(owner) ~= "string" or owner == "" or not utf8.len(owner)
      or owner:find("\0", 1, true)) then
    raise(level + 1, "%s: owner must be a non-empty UTF-8 string", fname)
  end
  return owner
end

--- Declare (or update) the recurring schedule `id`: at every slot of the
-- cron expression `expr`, a job `name` with `payload` is scheduled.
-- opts: tz ("UTC", "local" or an IANA name), catch_up (default true: after
-- downtime the latest missed slot runs once), backfill (seconds: run every
-- slot missed within that window instead), priority, max_attempts, owner (the
-- owner tag of the listener files that declare it: `run` removes it when
-- they no longer do; none: declared from code, kept until uncron).
-- Returns true, or nil, err.
function Scheduler:cron(id, expr, name, payload, opts)
  local c = check_self(self, "cron")
  if type(id) ~= "string" or id == "" then raise(2, "cron: id must be a non-empty string") end
  if not utf8.len(id) then raise(2, "cron: id is not valid UTF-8") end
  if type(expr) ~= "string" then raise(2, "cron: the expression must be a string, got %s", type(expr)) end
  check_name("cron", name, 2)
  opts = check_options("cron", opts, CRON_OPTIONS, 2)
  local ok, sched = pcall(cron.parse, expr)
  if not ok then error(sched, 2) end
  local zone_name = opts.tz or "UTC"
  if type(zone_name) ~= "string" then raise(2, "cron: tz must be a string") end
  local zok, zone = pcall(tz.get, zone_name)
  if not zok then error(zone, 2) end
  if opts.catch_up ~= nil and type(opts.catch_up) ~= "boolean" then
    raise(2, "cron: catch_up must be a boolean")
  end
  if opts.backfill ~= nil and (not is_finite(opts.backfill) or opts.backfill < 0) then
    raise(2, "cron: backfill must be a number of seconds >= 0")
  end
  local priority = opts.priority and check_int("cron", "priority", opts.priority, 0, 2)
  local max_attempts = opts.max_attempts and check_int("cron", "max_attempts", opts.max_attempts, 1, 2)
  local owner = check_owner("cron", opts.owner, 2)
  local now, err = c:db_now()
  if not now then return nil, err end
  local next_at = sched:next(now, zone) or math.huge
  return c:cron_put(id, expr, zone_name, name, payload, priority, max_attempts,
    opts.catch_up ~= false, opts.backfill, next_at, owner)
end

--- Remove the recurring schedule `id`: true if it existed.  opts.owner:
-- only if that owner declared it last.
function Scheduler:uncron(id, opts)
  local c = check_self(self, "uncron")
  if type(id) ~= "string" or id == "" then raise(2, "uncron: id must be a non-empty string") end
  opts = check_options("uncron", opts, { owner = true }, 2)
  return c:cron_remove(id, check_owner("uncron", opts.owner, 2))
end

--- Every recurring schedule: an array of { id, expr, tz, name, payload,
-- priority, max_attempts, catch_up, backfill, next_at, owner }, or nil, err.
function Scheduler:crons()
  local rows, err = check_self(self, "crons"):crons()
  if not rows then return nil, err end
  return rows
end

--- Run the loop.  opts.seconds: return after that long; opts.drain: run
-- what is due now and return how many ran.  With `concurrency` above 1,
-- the jobs run in coroutines of a cqueues loop of its own
-- (scheduler.cqueues), so that listeners may wait on cqueues I/O.
function Scheduler:run(opts)
  local c = check_self(self, "run")
  opts = check_options("run", opts, { seconds = true, drain = true }, 2)
  local seconds = opts.seconds
  if seconds ~= nil and (not is_finite(seconds) or seconds < 0) then
    raise(2, "run: seconds must be a finite number >= 0, got %s", tostring(seconds))
  end
  if self._concurrency == 1 then return c:run(seconds, opts.drain and true or false) end
  if opts.drain then raise(2, "run: drain needs concurrency = 1") end
  local ok, cqueues = pcall(require, "cqueues")
  if not ok then
    return nil, "scheduler: run: concurrency > 1 needs an event loop: install lua-cqueues"
      .. " (Debian: lua-cqueues), or attach the instance to your own loop (scheduler.luv)"
  end
  local cq = cqueues.new()
  require("scheduler.cqueues").attach(self, cq)
  -- SIGTERM and SIGINT stop it gracefully, as they do run() at concurrency 1
  local signal = require "cqueues.signal"
  signal.block(signal.SIGTERM, signal.SIGINT)
  local listener = signal.listen(signal.SIGTERM, signal.SIGINT)
  local t_end = seconds and cqueues.monotime() + seconds
  cq:wrap(function()
    while self._flight do
      local left = t_end and t_end - cqueues.monotime()
      if left and left <= 0 then
        self:stop()
        break
      end
      if listener:wait(math.min(left or 0.5, 0.5)) then
        self:stop()
        break
      end
    end
  end)
  local done, err = cq:loop()
  signal.unblock(signal.SIGTERM, signal.SIGINT)
  if not done then
    -- a listener's coroutine broke the loop: the jobs in flight are left
    -- to their leases
    if self._flight then
      c:fetch_close()
      self._flight = nil
    end
    error(err, 0)
  end
  return true
end

--- Start the worker inside the caller's own event loop, without blocking:
-- it is then driven by step() (the instance is a pollable: pollfd(),
-- events(), timeout()).  opts.spawn(fn): how to run a job's function in
-- that loop (default: a new coroutine, resumed by its listener's own
-- callbacks); opts.release(fd): called before the descriptor pollfd()
-- gave closes, when the worker has stopped; opts.call(fn, deadline): calls
-- a listener (fn) so that it can be abandoned when its time limit passes
-- while it waits (deadline: monotonic seconds, or nil), returning fn's
-- results, or nothing when abandoned; opts.waiter(): returns {wait =,
-- wake =} for the running coroutine, whose wait() yields to the loop
-- until wake() is called (schedule() from a coroutine of the loop waits
-- for the database so; without it, schedule() blocks).  scheduler.cqueues
-- and scheduler.luv do this for you.
-- Returns true, or nil and an error message.
function Scheduler:start(opts)
  local c = check_self(self, "start")
  opts = check_options("start", opts, { spawn = true, release = true, call = true, waiter = true }, 2)
  for _, k in ipairs { "spawn", "release", "call", "waiter" } do
    if opts[k] ~= nil and not is_callable(opts[k]) then raise(2, "start: %s must be a function", k) end
  end
  if self._flight then return nil, "scheduler: start: already started" end
  return concurrent.start(self, c, self._concurrency, opts, self._log)
end

--- Do the worker's ready work (start() first, if it was not called),
-- waiting up to `timeout` seconds (default 0) for some.  Returns true
-- while the worker runs, false once stop() has taken effect: every job in
-- flight ended and every outcome recorded.
function Scheduler:step(timeout)
  check_self(self, "step")
  if timeout ~= nil and (not is_finite(timeout) or timeout < 0) then
    raise(2, "step: timeout must be a finite number >= 0, got %s", tostring(timeout))
  end
  if not self._flight and not self._stepped then
    self._stepped = true
    local ok, err = self:start()
    if not ok then return nil, err end
  end
  local running = concurrent.step(self, timeout)
  if not running then self._stepped = nil end
  return running
end

--- The descriptor an event loop watches for step() (cqueues' pollable).
function Scheduler:pollfd()
  local c = check_self(self, "pollfd")
  if not self._flight then raise(2, "pollfd: the worker is not started (start() or step())") end
  return c:fetch_fd()
end

--- What the descriptor is watched for: readable.
function Scheduler:events()
  return "r"
end

--- Seconds until step() has work of its own, or nil (cqueues' pollable).
function Scheduler:timeout()
  check_self(self, "timeout")
  return concurrent.timeout(self)
end

--- Stop run() gracefully (from a listener or a signal handler's caller).
-- A concurrent worker claims nothing more, hands back what it had not
-- started, and lets the jobs in flight end.
function Scheduler:stop()
  local c = check_self(self, "stop")
  concurrent.stop(self)
  c:stop()
end

--- Close the instance: its connection is released; later calls raise.
function Scheduler:close()
  check_self(self, "close"):close()
end
Scheduler.__close = Scheduler.close

function Scheduler:__tostring()
  return tostring(self._core)
end

--- A new, independent instance.
function M.new(opts)
  return new_instance(opts, 2)
end

--- The current Unix time (host clock) as a float.
M.now = core.now

--- The next n fire times of a cron expression (Unix seconds), strictly
-- after opts.from (default now), in zone opts.tz (default "UTC").
M.next_times = cron.next_times

-- The default instance behind the module-level functions.
local default

--- Configure the default instance.  Listeners registered before are kept.
function M.configure(opts)
  local fresh = new_instance(opts, 2)
  if default then
    if default._core:running() then raise(2, "configure: the default instance is running") end
    for name, fn in pairs(default._listeners) do
      fresh:on(name, fn, { max_attempts = default._limits[name], timeout = default._timeouts[name],
        concurrency = default._slots[name], history = default._histories[name] })
    end
    default:close()
  end
  default = fresh
end

local function get_default()
  if not default then default = new_instance(nil, 3) end
  return default
end

for _, name in ipairs { "on", "off", "schedule", "schedule_many", "cancel", "job", "retry", "abandon", "cron",
  "uncron", "crons", "jobs", "stats", "retry_failed", "delete", "purge", "schema_version", "run", "stop",
  "pause", "resume", "paused", "prune_history", "limit", "limits", "totals", "durations" } do
  local method = Scheduler[name]
  M[name] = function(...) return method(get_default(), ...) end
end

return M
