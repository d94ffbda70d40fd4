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

local M = { _VERSION = "lua-scheduler " .. core._VERSION }

local DEFAULT_LEASE = 30
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
      io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lua-scheduler[", worker_id, "] ",
        level, ": ", message, "\n")
    end
  end
end

local CONFIG_OPTIONS = {
  database = true, worker_id = true, lease = true, max_attempts = true,
  backoff = true, log = true,
}

--- Build the C core for validated options, sharing `listeners`/`limits`.
local function build(opts, listeners, limits, level)
  opts = check_options("configure", opts, CONFIG_OPTIONS, level + 1)
  local database = opts.database or os.getenv("LUA_SCHEDULER_DATABASE")
  if database == nil then
    raise(level + 1, "configure: no database: pass database = \"postgresql://...\" "
      .. "or set LUA_SCHEDULER_DATABASE")
  end
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

  local worker_id = opts.worker_id or core.default_worker_id()
  local log = make_log(opts.log, worker_id)
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
    listeners = listeners, limits = limits, backoff = backoff, log = log,
  }
  if not c then raise(level + 1, "%s", (err:gsub("^scheduler: ", ""))) end
  return c
end

local function new_instance(opts, level)
  local self = setmetatable({ _listeners = {}, _limits = {} }, Scheduler)
  self._core = build(opts, self._listeners, self._limits, level + 1)
  return self
end

local function check_self(self, fname)
  if getmetatable(self) ~= Scheduler then
    raise(3, "%s: call it as a method, s:%s(...)", fname, fname)
  end
  return self._core
end

--- Register (or replace) the listener for `name`: fn(payload, job).
-- opts.max_attempts overrides the instance default for jobs of this name.
function Scheduler:on(name, fn, opts)
  local c = check_self(self, "on")
  check_name("on", name, 2)
  if not is_callable(fn) then
    raise(2, "on: the listener must be a function or callable table, got %s", type(fn))
  end
  opts = check_options("on", opts, { max_attempts = true }, 2)
  local max = opts.max_attempts and check_int("on", "max_attempts", opts.max_attempts, 1, 2)
  c:on(name, fn, max)
end

--- Remove the listener for `name`.
function Scheduler:off(name)
  local c = check_self(self, "off")
  check_name("off", name, 2)
  c:off(name)
end

local WHEN_OPTIONS = { at = true, delay = true, key = true, priority = true, max_attempts = true }

--- Schedule job `name` with `payload`.  `when`: nil (now), absolute Unix
-- seconds, or { at = t | delay = s, key =, priority =, max_attempts = }.
-- Returns the id once the job is durably stored, or nil, err.
function Scheduler:schedule(name, payload, when)
  local c = check_self(self, "schedule")
  check_name("schedule", name, 2)
  local at, delay, key, priority, max_attempts
  if type(when) == "number" then
    if not is_finite(when) then raise(2, "schedule: the time must be a finite number, got %s", when) end
    at = when
  elseif type(when) == "table" then
    check_options("schedule", when, WHEN_OPTIONS, 2)
    at, delay, key = when.at, when.delay, when.key
    if at ~= nil and delay ~= nil then raise(2, "schedule: give at or delay, not both") end
    if at ~= nil and not is_finite(at) then
      raise(2, "schedule: at must be a finite number (Unix seconds), got %s", tostring(at))
    end
    if delay ~= nil and not is_finite(delay) then
      raise(2, "schedule: delay must be a finite number of seconds, got %s", tostring(delay))
    end
    if key ~= nil and (type(key) ~= "string" or key == "") then
      raise(2, "schedule: key must be a non-empty string, got %s", type(key))
    end
    if when.priority ~= nil then priority = check_int("schedule", "priority", when.priority, 0, 2) end
    if when.max_attempts ~= nil then
      max_attempts = check_int("schedule", "max_attempts", when.max_attempts, 1, 2)
    end
  elseif when ~= nil then
    raise(2, "schedule: when must be nil, a number or a table, got %s", type(when))
  end
  return c:schedule(name, payload, at, delay, key, priority, max_attempts)
end

--- Remove a waiting job: true if one was removed.
function Scheduler:cancel(id)
  return check_self(self, "cancel"):cancel(check_id("cancel", id, 2))
end

--- The job's current record, or nil when it no longer exists.
function Scheduler:job(id)
  return check_self(self, "job"):job(check_id("job", id, 2))
end

--- Put a failed job back to run now: true if it was failed.
function Scheduler:retry(id)
  return check_self(self, "retry"):retry(check_id("retry", id, 2))
end

--- Run the loop.  opts.seconds: return after that long; opts.drain: run
-- what is due now and return how many ran.
function Scheduler:run(opts)
  local c = check_self(self, "run")
  opts = check_options("run", opts, { seconds = true, drain = true }, 2)
  local seconds = opts.seconds
  if seconds ~= nil and (not is_finite(seconds) or seconds < 0) then
    raise(2, "run: seconds must be a finite number >= 0, got %s", tostring(seconds))
  end
  return c:run(seconds, opts.drain and true or false)
end

--- Stop run() gracefully (from a listener or a signal handler's caller).
function Scheduler:stop()
  check_self(self, "stop"):stop()
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

-- The default instance behind the module-level functions.
local default

--- Configure the default instance.  Listeners registered before are kept.
function M.configure(opts)
  local fresh = new_instance(opts, 2)
  if default then
    if default._core:running() then raise(2, "configure: the default instance is running") end
    for name, fn in pairs(default._listeners) do
      fresh:on(name, fn, { max_attempts = default._limits[name] })
    end
    default:close()
  end
  default = fresh
end

local function get_default()
  if not default then default = new_instance(nil, 3) end
  return default
end

for _, name in ipairs { "on", "off", "schedule", "cancel", "job", "retry", "run", "stop" } do
  local method = Scheduler[name]
  M[name] = function(...) return method(get_default(), ...) end
end

return M
