--- scheduler.cli: the `lua-scheduler` command (bin/lua-scheduler calls
-- main(arg)).
--
--   lua-scheduler run [--workers N] PATH...     run listener files
--   lua-scheduler schedule NAME [PAYLOAD] ...   schedule a job, print its id
--   lua-scheduler jobs | show | cancel | delete | purge | retry | pause | resume | limit | stats | metrics | migrate | health | cron list|remove|next
--
-- Data goes to stdout, logs and errors to stderr.  Exit status: 0 success,
-- 1 runtime failure (database, no such job), 2 usage error (the message
-- names the bad flag or value and the usage follows).
--
-- Adding a subcommand is adding an entry to COMMANDS below: its synopsis,
-- options (parsed and checked before `run` is called), arguments and a
-- run(o) function that returns nothing (success) or raises through
-- scheduler.cli.errors.

local core = require "scheduler.core"
local scheduler = require "scheduler"
local errors = require "scheduler.cli.errors"
local text = require "scheduler.cli.text"

local cli = {}

local PROG = "lua-scheduler"
local DEFAULT_MAX_ATTEMPTS = 25 -- scheduler.configure's default
local DEFAULT_LIMIT = 100

local usage_error, failure = errors.usage, errors.failure

local function out(...)
  io.stdout:write(...)
end

---------------------------------------------------------------------------
-- option values
---------------------------------------------------------------------------

local function integer_between(min, max)
  return function(s)
    return text.parse_integer(s, min, max)
  end
end

local function one_of(...)
  local set, list = {}, { ... }
  for _, v in ipairs(list) do set[v] = true end
  return function(s)
    if set[s] then return s end
    return nil, "expected one of " .. table.concat(list, ", ")
  end
end

-- The latest due time a job may have: 9999-12-31T23:59:59Z, the last one
-- RFC 3339 can write and both backends store (a later one used to be
-- refused by PostgreSQL as a runtime failure, exit 1, and stored by SQLite).
local LATEST = 253402300799

local function duration_value(s)
  local d, why = text.parse_duration(s)
  if not d then return nil, why end
  if d > LATEST - os.time() then return nil, "that is after the year 9999" end
  return d
end

local function time_value(s)
  local t, why = text.parse_time(s)
  if not t then return nil, why end
  if t > LATEST then return nil, "that is after the year 9999" end
  return t
end

local function positive_duration(s)
  local d, why = text.parse_duration(s)
  if not d then return nil, why end
  if d <= 0 then return nil, "expected more than 0 seconds" end
  return d
end

-- Options several commands share.
local DATABASE = {
  "--database", value = "URL",
  help = "sqlite:PATH, or a PostgreSQL URL or libpq keyword string (default:"
    .. " $LUA_SCHEDULER_DATABASE, else sqlite:scheduler.db); also before the command",
}
local JSON = { "--json", help = "print JSON instead of text" }
local LISTENERS = {
  "--listeners", value = "PATH",
  help = "the listener file or directory `run` uses: read the max_attempts listeners set"
    .. " (default: $LUA_SCHEDULER_LISTENERS)",
}

---------------------------------------------------------------------------
-- helpers for commands
---------------------------------------------------------------------------

--- A password given with --database is visible to every user of the
-- host (ps, /proc/PID/cmdline) and stays in the shell's history.  Hide it
-- from this process's command line as soon as possible, and say how to
-- avoid it.  (Workers get the database through the environment.)
local warned_password = false
local function hide_password(database)
  local secrets = core.database_secrets(database)
  if #secrets == 0 then return end
  for _, secret in ipairs(secrets) do core.process.hide_arg(secret) end
  if warned_password then return end -- (--database before and after the command)
  warned_password = true
  io.stderr:write(PROG, ": warning: the password in --database is visible to other users (ps,",
    " shell history) until it is hidden at start-up; give it in LUA_SCHEDULER_DATABASE or",
    " a PGPASSFILE instead\n")
end

--- The database string this command uses, and where it came from
-- ("--database", "LUA_SCHEDULER_DATABASE", or nil for the default).
local function database_of(o)
  local d, from = o.database, "--database"
  if d == nil then d, from = os.getenv("LUA_SCHEDULER_DATABASE"), "LUA_SCHEDULER_DATABASE" end
  -- nothing configured: the SQLite file in the working directory, as for a
  -- script (scheduler.DEFAULT_DATABASE)
  if d == nil then d, from = scheduler.DEFAULT_DATABASE, nil end
  if d == "" then
    usage_error("no database: --database or LUA_SCHEDULER_DATABASE is empty")
  end
  return d, from
end

--- The file of an SQLite database string (nil for PostgreSQL and for
-- sqlite::memory:).
local function sqlite_file(database)
  local path = database:match("^sqlite:(.+)$")
  if not path or path:match("^:memory:") then return nil end
  return path
end

--- `database` as the command names it to people: an SQLite file by its
-- absolute path (a relative one is where the confusion starts), a
-- PostgreSQL string with its passwords masked.
local function database_label(database)
  local path = sqlite_file(database)
  if path then
    local cwd = path:sub(1, 1) ~= "/" and core.current_dir()
    return "sqlite:" .. (cwd and (cwd .. "/" .. path) or path)
  end
  return text.mask(database, core.database_secrets(database))
end

--- A handle on the command's database (scheduler.cli.db), after saying on
-- stderr which one it is (stdout, --json included, is unaffected).  The
-- admin commands never create an SQLite file: a missing one is most often
-- a shell without LUA_SCHEDULER_DATABASE, and a job scheduled into a new
-- file would never run.  `create`: migrate, whose work that is.
local function open_db(o, create)
  local database, from = database_of(o)
  local path = sqlite_file(database)
  if path and not create then
    local f, _, code = io.open(path, "rb")
    if f then
      f:close()
    elseif code == 2 then -- ENOENT (another error, e.g. EACCES, is SQLite's to report)
      if from then
        failure(("no database at %s (from %s; `%s migrate` creates one)"):format(path, from, PROG))
      end
      failure(("no database at ./%s (set LUA_SCHEDULER_DATABASE or --database)"):format(path))
    end
  end
  local label = database_label(database)
  io.stderr:write(PROG, ": database ", label, " (",
    from and ("from " .. from) or "the default: neither --database nor LUA_SCHEDULER_DATABASE is set",
    ")\n")
  return require("scheduler.cli.db").new(database), label
end

local function job_id(s, what)
  local id = s:match("^%d+$") and math.tointeger(tonumber(s))
  if not id or id < 1 then
    usage_error(("%s: expected a job id (a positive integer), got %q"):format(what or "ID", s))
  end
  return id
end

--- PAYLOAD: JSON, or a bare word taken as a string.  Text that looks like
-- JSON (starts with { [ " a digit or -, or is true/false/null) must be
-- valid JSON.
local function parse_payload(s)
  local first = s:match("^%s*(.)")
  local jsonish = first and (first:match("[%[{\"%-%d]") or s:match("^%s*true%s*$")
    or s:match("^%s*false%s*$") or s:match("^%s*null%s*$"))
  if not jsonish then
    if not utf8.len(s) then usage_error("PAYLOAD is not valid UTF-8") end
    return s
  end
  local v, err = core.json_decode(s)
  if err then usage_error(("PAYLOAD is not valid JSON: %s"):format(err)) end
  return v
end

--- PAYLOAD from stdin ("-") or a file ("@path"): JSON only (a bare word is
-- a command-line convenience; a file's text would carry its newline).
-- Any size: nothing passes through argv, whose strings are capped at 128 KB.
local function payload_text(s, what)
  local v, err = core.json_decode(s)
  if err then usage_error(("%s is not valid JSON: %s"):format(what, err)) end
  return v
end

local function read_payload(a)
  if a == "-" then
    local s, err = io.stdin:read("a")
    if not s then usage_error("PAYLOAD -: cannot read stdin: " .. tostring(err)) end
    return payload_text(s, "PAYLOAD from stdin")
  end
  local path = a:match("^@(.+)$")
  if not path then return parse_payload(a) end
  local f, err = io.open(path, "rb")
  if not f then usage_error(("PAYLOAD %s: cannot read the file: %s"):format(a, err)) end
  local s, rerr = f:read("a")
  f:close()
  if not s then usage_error(("PAYLOAD %s: cannot read the file: %s"):format(a, rerr)) end
  return payload_text(s, "PAYLOAD " .. a)
end

--- The listener limits the files at --listeners PATH (else
-- $LUA_SCHEDULER_LISTENERS) set: { [name] = max_attempts or false, path =
-- PATH }, or nil without either.  The
-- files are loaded as `run` loads them (their top-level code runs; nothing
-- connects): the command cannot otherwise know a listener's max_attempts,
-- which lives only in the workers' files.
local function listener_limits(o)
  local path, from = o.listeners, "--listeners"
  if not path then
    path, from = os.getenv("LUA_SCHEDULER_LISTENERS"), "LUA_SCHEDULER_LISTENERS"
    if path == "" then path = nil end
  end
  if not path then return nil end
  local listeners = require "scheduler.cli.listeners"
  local files, err = listeners.files({ path })
  if not files then usage_error(from .. ": " .. err) end
  local found, lerr = listeners.load(files)
  if not found then usage_error(from .. ": " .. lerr, false) end
  local limits = { path = path }
  for _, l in ipairs(found) do
    limits[l.name] = type(l.opts) == "table" and math.tointeger(l.opts.max_attempts) or false
  end
  return limits
end

--- The attempts a worker allows job j, as dispatch_max_attempts applies
-- them (the job's own, else its listener's, else the default of `run`'s
-- workers), and where that comes from: "job", "listener", "default", or
-- "default?" when the job sets none and no --listeners were read (its
-- listener may set its own).
local function allowed_of(j, limits)
  if j.max_attempts then return j.max_attempts, "job" end
  if limits and limits[j.name] then return limits[j.name], "listener" end
  return DEFAULT_MAX_ATTEMPTS, limits and "default" or "default?"
end

-- How `show` says where the attempts allowed come from (%s: --listeners).
local FROM = {
  job = "the job's own max_attempts",
  listener = "its listener's max_attempts, in %s",
  default = "the default: neither the job nor a listener in %s sets max_attempts",
  ["default?"] = "the default, unless its listener sets max_attempts: --listeners PATH reads it",
}

-- A payload whose stored text does not decode (a row another client
-- wrote: job() gives payload_error and payload_text instead): both, after
-- the fields of JSON object `o` ("payload": null).
local function with_bad_payload(o, j)
  if j.payload_error then
    local n = o.n
    o[n + 1], o[n + 2], o[n + 3], o[n + 4] = "payload_error", j.payload_error, "payload_text", j.payload_text
    o.n = n + 4
  end
  return o
end

-- The payload as `show` prints it.
local function payload_shown(j)
  if j.payload_error then
    return ("%s (does not decode: %s)"):format(text.visible(j.payload_text), j.payload_error)
  end
  return text.json(j.payload)
end

-- A finished job kept by history (state done, cancelled, or failed with
-- its last run's fields): its fields as JSON.
local function history_json(j)
  return with_bad_payload(text.object(
    "id", j.id, "name", j.name, "state", j.state, "attempt", j.attempt,
    "priority", j.priority, "key", j.key, "payload", j.payload, "last_error", j.last_error,
    "worker", j.worker, "started_at", j.started_at and text.utc_time(j.started_at),
    "finished_at", j.finished_at and text.utc_time(j.finished_at), "duration", j.duration,
    "kept_until", j.kept_until and text.utc_time(j.kept_until)), j)
end

-- How long a history row's listener ran ("-": it never started).
local function took(j)
  if not j.duration then return "-" end
  if j.duration < 1 then return ("%.1fms"):format(j.duration * 1000) end
  return j.duration < 10 and ("%.2fs"):format(j.duration) or text.duration(j.duration)
end

local function job_json(j, limits)
  if j.finished_at and j.state ~= "failed" then return history_json(j) end
  local allowed, from = allowed_of(j, limits)
  return with_bad_payload(text.object(
    "id", j.id, "name", j.name, "state", j.state,
    "run_at", j.run_at and text.utc_time(j.run_at),
    "attempt", j.attempt, "max_attempts", j.max_attempts,
    "attempts_allowed", allowed, "attempts_allowed_from", from,
    "priority", j.priority, "key", j.key,
    "payload", j.payload,
    "last_error", j.last_error, "locked_by", j.locked_by,
    "locked_until", j.locked_until and text.utc_time(j.locked_until),
    "created_at", j.created_at and text.utc_time(j.created_at)), j)
end

local function when_of(j, now)
  return text.relative(j.run_at, now, j.state == "scheduled" and "late" or "ago")
end

--- Why cancel/retry did nothing, from the job's current state.
local function explain(api, id, wanted)
  local j, err = api:job(id)
  if err then failure(errors.strip(err)) end
  if not j then
    failure(("no job %d (it finished, was cancelled, or never existed)"):format(id))
  end
  if wanted == "cancel" then
    failure(("job %d is %s; only a waiting (scheduled) job can be cancelled"):format(id, j.state)
      .. (j.state == "failed" and (" (delete %d removes it)"):format(id) or ""))
  end
  if wanted == "delete" then
    failure(("job %d is %s; only a failed or waiting job can be deleted"):format(id, j.state))
  end
  failure(("job %d is %s, not failed; only a failed job can be retried"):format(id, j.state))
end

---------------------------------------------------------------------------
-- commands
---------------------------------------------------------------------------

local COMMANDS = {}

COMMANDS.run = {
  summary = "run listener files with a pool of worker processes",
  synopsis = { "run [--database URL] [--workers N] [--concurrency C] [--stop-timeout DURATION] [--log-level L]"
    .. " [--log-format text|json] [--cron-owner NAME] PATH..." },
  description = [[
PATH is a listener file or a directory of *.lua files (loaded in sorted
order).  A listener file calls require("scheduler").on(name, fn) or returns
a table { Name = function(payload, job) ... end }.  All files are loaded and
checked before the database is touched; a name registered by two files is
an error.

The supervisor starts N worker processes, each loading the files itself with
its own connection, restarts a worker that dies (at once when killed from
outside; with a growing delay when it keeps dying on its own right after
starting) and puts the jobs a dead worker held back to run at once (trying
again until that works).
With --concurrency C above 1, each worker runs up to C jobs at once, each
in a coroutine of a cqueues loop, so listeners that wait on cqueues I/O
(cqueues.sleep, sockets, lua-http) let the others run meanwhile.
SIGINT/SIGTERM: stop claiming, finish the jobs in hand, exit 0 (a second one,
or --stop-timeout passing, stops at once, exit 1: each worker's process group
is killed, so what its listeners started ends too, and its jobs are put
back).  SIGHUP: reload the files by replacing the workers.
Under systemd Type=notify it reports READY=1 once every worker has
connected, STATUS= (e.g. "waiting for the database: ..."), and WATCHDOG=1
while healthy.
Recurring schedules declared in the files (scheduler.cron) belong to them,
under the owner NAME: at start and at each reload, the supervisor declares
them and removes those of NAME that no file declares any more.  Schedules
declared from code, or by another owner, are left alone.]],
  options = {
    DATABASE,
    { "--workers", value = "N", parse = integer_between(1, 1024), help = "worker processes (default 1)" },
    { "--concurrency", value = "C", parse = integer_between(1, 100000),
      help = "jobs each worker runs at once, in cqueues coroutines (default 1)" },
    { "--log-level", value = "L", parse = one_of("debug", "info", "warn", "error"),
      help = "debug, info (default), warn or error" },
    { "--log-format", value = "F", parse = one_of("text", "json"),
      help = "text (default) or json: one object per line" },
    { "--stop-timeout", value = "DURATION", parse = positive_duration,
      help = "after SIGINT/SIGTERM, stop at once after this long (default: wait)" },
    { "--cron-owner", value = "NAME", parse = function(v)
      if v ~= "" and utf8.len(v) and not v:find("%c") then return v end
      return nil, "expected a non-empty name"
    end, help = "owner of the files' recurring schedules (default: $LUA_SCHEDULER_CRON_OWNER,"
      .. " else \"default\")" },
  },
  args = { { "PATH", many = true } },
  run = function(o)
    local listeners = require "scheduler.cli.listeners"
    local owner = o.cron_owner or os.getenv("LUA_SCHEDULER_CRON_OWNER")
    if owner == nil or owner == "" then owner = "default" end
    local files, err = listeners.files(o.PATH)
    if not files then usage_error(err) end
    local found, lerr = listeners.load(files)
    if not found then usage_error(lerr, false) end
    local database, from = database_of(o)
    local checked, cerr = listeners.check(found, database)
    if not checked then usage_error(cerr, false) end
    return require("scheduler.cli.run").supervise {
      database = database, database_label = database_label(database) .. " (" .. (from and ("from " .. from) or "the default") .. ")",
      workers = o.workers or 1, concurrency = o.concurrency or 1, paths = o.PATH, found = found,
      cron_owner = owner,
      log_level = o.log_level or "info", log_format = o.log_format or "text", arg = cli.arg,
      stop_timeout = o.stop_timeout,
    }
  end,
}

-- Worker mode, started by `run` (not for people: undocumented).
COMMANDS.__worker = {
  hidden = true,
  synopsis = { "__worker --slot N [--id-suffix S] [--log-level L] [--log-format F] PATH..." },
  options = {
    { "--slot", value = "N", parse = integer_between(1, 1024) },
    -- the random end of the worker's id, chosen by the supervisor (run.lua)
    { "--id-suffix", value = "S", parse = function(v)
      if #v <= 64 and v:match("^%w+$") then return v end
      return nil, "expected 1 to 64 letters and digits"
    end },
    { "--log-level", value = "L", parse = one_of("debug", "info", "warn", "error") },
    { "--log-format", value = "F", parse = one_of("text", "json") },
    { "--concurrency", value = "C", parse = integer_between(1, 100000) },
  },
  args = { { "PATH", many = true } },
  run = function(o)
    return require("scheduler.cli.run").worker {
      slot = o.slot or 1, id_suffix = o.id_suffix, paths = o.PATH, log_level = o.log_level or "info",
      concurrency = o.concurrency or 1,
      log_format = o.log_format or "text",
    }
  end,
}

COMMANDS.schedule = {
  summary = "schedule a job and print its id",
  synopsis = { "schedule NAME [PAYLOAD | - | @FILE] [--at TIME | --in DURATION] [--key K] [--priority P]"
    .. " [--max-attempts N]" },
  description = [[
PAYLOAD is JSON ('{"to": "ada@example.com"}', 42, '"text"'); a bare word is
taken as a string.  - reads the payload from stdin, @FILE from a file (JSON
only, any size; '"@text"' is the string @text).  Without --at or --in the
job is due now (neither may be after 9999-12-31T23:59:59Z).
TIME: RFC 3339 (2026-11-24T09:00:00Z, 2026-11-24T10:00:00+01:00) or Unix
seconds.  DURATION: 90, 90s, 5m, 2h, 1d, or combinations (1h30m).
With --key, at most one unfinished job exists per key: scheduling again
prints the existing job's id.]],
  options = {
    { "--at", value = "TIME", parse = time_value, help = "when the job is due" },
    { "--in", value = "DURATION", parse = duration_value, help = "due this long from now" },
    { "--key", value = "K", help = "deduplication key" },
    { "--priority", value = "P", parse = integer_between(0, 2147483647),
      help = "lower runs first (default 0)" },
    { "--max-attempts", value = "N", parse = integer_between(1, 2147483647),
      help = "attempts before the job is kept as failed" },
    JSON, DATABASE,
  },
  args = { { "NAME" }, { "PAYLOAD", optional = true } },
  run = function(o)
    if o.NAME == "" then usage_error("NAME must not be empty") end
    if not utf8.len(o.NAME) then usage_error("NAME is not valid UTF-8") end
    if o.at and o["in"] then usage_error("give --at or --in, not both") end
    if o.key == "" then usage_error("--key must not be empty") end
    if o.key and not utf8.len(o.key) then usage_error("--key is not valid UTF-8") end
    local payload = nil
    if o.PAYLOAD then payload = read_payload(o.PAYLOAD) end
    local db = open_db(o)
    -- a payload the API cannot store (nested deeper than it takes) raises
    local ok, id, err = pcall(db:api().schedule, db:api(), o.NAME, payload, {
      at = o.at, delay = o["in"], key = o.key, priority = o.priority, max_attempts = o.max_attempts,
    })
    if not ok then
      db:close()
      usage_error("PAYLOAD: " .. errors.strip(tostring(id):gsub("^[^\n]-:%d+: ", ""):gsub("^scheduler: schedule: ", "")))
    end
    db:close()
    if not id then failure(errors.strip(err)) end
    out(o.json and text.json(text.object("id", id)) or tostring(id), "\n")
  end,
}

COMMANDS.jobs = {
  summary = "list jobs",
  synopsis = { "jobs [--state scheduled|running|failed|done|cancelled] [--name N] [--limit N] [--listeners PATH] [--json]" },
  description = [[
Waiting, running and failed jobs in the order they are due (a job that
succeeded is gone).  RUN AT is local time; WHEN is relative ("in 5m", "3s
late" for a due job still waiting).  Shows at most --limit jobs (default
100; 0: all).  ATTEMPT: the attempt and the attempts allowed (the job's
own max_attempts, else its listener's, else 25); "?": the default, unless
the listener sets its own, which only its file says: --listeners PATH (the
PATH `run` uses) reads it.  Long fields are cut ("..."); --json and show
give them whole.  --state done or cancelled: the finished jobs history
keeps (configure{history}), newest first.]],
  options = {
    { "--state", value = "S", parse = one_of("scheduled", "running", "failed", "done", "cancelled"),
      help = "only jobs in this state" },
    { "--name", value = "N", help = "only jobs with this name" },
    { "--limit", value = "N", parse = integer_between(0), help = "at most N jobs (default 100, 0: all)" },
    LISTENERS, JSON, DATABASE,
  },
  run = function(o)
    local limit = o.limit or DEFAULT_LIMIT
    local limits = listener_limits(o)
    local db = open_db(o)
    local jobs, now = db:jobs { state = o.state, name = o.name, limit = limit > 0 and limit + 1 or nil }
    db:close()
    local more = limit > 0 and #jobs > limit
    if more then jobs[#jobs] = nil end
    if o.json then
      local list = {}
      for i, j in ipairs(jobs) do list[i] = job_json(j, limits) end
      out(text.json(text.array(list)), "\n")
    elseif #jobs == 0 then
      io.stderr:write("no jobs\n")
    elseif o.state == "done" or o.state == "cancelled" then
      local rows = {}
      for i, j in ipairs(jobs) do
        rows[i] = { tostring(j.id), j.name, j.state, text.local_time(j.finished_at), took(j),
          tostring(j.attempt), j.worker or "-", text.first_line(j.last_error, 60) }
      end
      out(text.table({ "ID", "NAME", "STATE", "FINISHED AT", "TOOK", "ATTEMPT", "WORKER", "LAST ERROR" },
        rows, { [1] = true, [5] = true, [6] = true }, { [8] = 60 }))
    else
      local rows, unsure = {}, false
      for i, j in ipairs(jobs) do
        local allowed, from = allowed_of(j, limits)
        unsure = unsure or from == "default?"
        rows[i] = { tostring(j.id), j.name, j.state, text.local_time(j.run_at), when_of(j, now),
          ("%d/%d%s"):format(j.attempt, allowed, from == "default?" and "?" or ""),
          text.first_line(j.last_error, 72) }
      end
      if unsure then
        io.stderr:write(("(?: %d, the default, unless the job's listener sets max_attempts:"
          .. " --listeners PATH reads them)\n"):format(DEFAULT_MAX_ATTEMPTS))
      end
      out(text.table({ "ID", "NAME", "STATE", "RUN AT", "WHEN", "ATTEMPT", "LAST ERROR" }, rows,
        { [1] = true, [6] = true }, { [7] = 72 }))
    end
    if more then
      io.stderr:write(("(only the first %d jobs; use --limit N, or --limit 0 for all)\n"):format(limit))
    end
  end,
}

COMMANDS.show = {
  summary = "show one job",
  synopsis = { "show ID [--listeners PATH] [--json]" },
  description = [[
Every field of the job, with its payload and its whole last error.  The
attempts allowed are the job's own max_attempts, else its listener's, else
the default (25); the listener's is known only from its file: give
--listeners PATH (the PATH `run` uses).  A finished job (done, cancelled)
is found while history keeps it, with the worker that ran it, when, and
for how long; so is a failed job's last run.]],
  options = { LISTENERS, JSON, DATABASE },
  args = { { "ID" } },
  run = function(o)
    local id = job_id(o.ID)
    local limits = listener_limits(o)
    local db = open_db(o)
    local jobs, now = db:jobs { id = id }
    local j = jobs[1]
    local kept = nil -- history's last record of it (configure{history})
    if not j or j.state == "failed" then
      -- job(id) finds it in history, or adds its last run
      local h, err = db:api():job(id)
      if err then
        db:close()
        failure(errors.strip(err))
      end
      if h and h.finished_at then kept = h end
    end
    db:close()
    if not j and kept then
      if o.json then
        out(text.json(history_json(kept)), "\n")
        return
      end
      local lines = {
        { "id", tostring(kept.id) },
        { "name", text.visible(kept.name) },
        { "state", kept.state },
        { "finished at", ("%s (%s)"):format(text.local_time(kept.finished_at, true),
          text.relative(kept.finished_at, now, "ago")) },
        { "started at", kept.started_at and text.local_time(kept.started_at, true) or "- (never started)" },
        { "took", took(kept) },
        { "worker", kept.worker and text.visible(kept.worker) or "-" },
        { "attempt", tostring(kept.attempt) },
        { "priority", tostring(kept.priority) },
        { "key", kept.key and text.visible(kept.key) or "-" },
        { "payload", payload_shown(kept) },
        { "kept until", text.local_time(kept.kept_until, true) },
      }
      for _, l in ipairs(lines) do out(("%-12s %s\n"):format(l[1], l[2])) end
      if kept.last_error then
        out("last error\n")
        out((text.visible(kept.last_error, "\n\t"):gsub("[^\n]+", "  %0")), "\n")
      end
      return
    end
    if not j then failure(("no job %d (it finished, was cancelled, or never existed)"):format(id)) end
    if kept and kept.state == "failed" then
      -- its last run, as history kept it
      j.worker, j.started_at, j.finished_at, j.duration = kept.worker, kept.started_at,
        kept.finished_at, kept.duration
    end
    if o.json then
      out(text.json(job_json(j, limits)), "\n")
      return
    end
    local allowed, from = allowed_of(j, limits)
    local lines = {
      { "id", tostring(j.id) },
      { "name", text.visible(j.name) },
      { "state", j.state },
      { "run at", ("%s (%s)"):format(text.local_time(j.run_at, true), when_of(j, now)) },
      { "attempt", ("%d of %d (%s)"):format(j.attempt, allowed, FROM[from]:format(limits and limits.path)) },
      { "priority", tostring(j.priority) },
      { "key", j.key and text.visible(j.key) or "-" },
      { "payload", payload_shown(j) },
      { "created at", j.created_at and text.local_time(j.created_at, true) or "-" },
    }
    if j.locked_by then
      lines[#lines + 1] = { "locked by", text.visible(j.locked_by) }
      -- (none yet: PostgreSQL, in the batch its worker's transaction holds)
      lines[#lines + 1] = { "lease until", j.locked_until and text.local_time(j.locked_until, true)
        or "- (held in its worker's batch, no lease yet)" }
    end
    if j.finished_at then -- a failed job's last run (history)
      lines[#lines + 1] = { "last run", ("%s, %s, by %s"):format(
        text.local_time(j.started_at or j.finished_at, true), took(j), j.worker and text.visible(j.worker) or "-") }
    end
    for _, l in ipairs(lines) do out(("%-12s %s\n"):format(l[1], l[2])) end
    if j.last_error then
      out("last error\n")
      out((text.visible(j.last_error, "\n\t"):gsub("[^\n]+", "  %0")), "\n")
    end
  end,
}

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

COMMANDS.cancel = {
  summary = "cancel a waiting job",
  synopsis = { "cancel ID [--json]" },
  description = [[
Removes a waiting (scheduled) job, also one a worker has claimed but not
started.  A running or failed job is not touched (exit 1; `delete` removes a
failed one).  `purge` removes many jobs at once.]],
  options = { JSON, DATABASE },
  args = { { "ID" } },
  run = function(o)
    local id = job_id(o.ID)
    local db = open_db(o)
    local api = db:api()
    local done, err = api:cancel(id)
    if done == nil then failure(errors.strip(err)) end
    if not done then explain(api, id, "cancel") end
    db:close()
    if o.json then
      out(text.json(text.object("cancelled", 1)), "\n")
    else
      out(("cancelled job %d\n"):format(id))
    end
  end,
}

COMMANDS.delete = {
  summary = "delete a failed or waiting job",
  synopsis = { "delete ID [--json]" },
  description = [[
Removes the job for good: a failed job, or a waiting one (as cancel does).
A running job is not touched (exit 1).]],
  options = { JSON, DATABASE },
  args = { { "ID" } },
  run = function(o)
    local id = job_id(o.ID)
    local db = open_db(o)
    local api = db:api()
    local done, err = api:delete(id)
    if done == nil then failure(errors.strip(err)) end
    if not done then explain(api, id, "delete") end
    db:close()
    if o.json then
      out(text.json(text.object("deleted", 1)), "\n")
    else
      out(("deleted job %d\n"):format(id))
    end
  end,
}

COMMANDS.purge = {
  summary = "remove waiting and failed jobs in bulk",
  synopsis = { "purge NAME | --all [--state scheduled|failed] [--older-than DURATION] [--json]" },
  description = [[
Removes the waiting and failed jobs of job name NAME (--all: of every name)
and prints how many.  --state: only the waiting (scheduled) or only the
failed ones; --older-than: only jobs whose time (a failed job's: its last
attempt's) is more than DURATION ago, on the database's clock.  DURATION:
90, 90s, 5m, 2h, 1d, or combinations (1d12h).  A running job is never
removed, nor a waiting job a worker has already claimed.]],
  options = {
    { "--all", help = "jobs of every name" },
    { "--state", value = "S", parse = one_of("scheduled", "failed"),
      help = "only waiting (scheduled) or only failed jobs" },
    { "--older-than", value = "DURATION", parse = duration_value,
      help = "only jobs whose time is longer ago" },
    JSON, DATABASE,
  },
  args = { { "NAME", optional = true } },
  run = function(o)
    if o.NAME and o.all then usage_error("give NAME or --all, not both") end
    if not o.NAME and not o.all then usage_error("missing NAME (or --all)") end
    if o.NAME == "" then usage_error("NAME must not be empty") end
    if o.NAME and not utf8.len(o.NAME) then usage_error("NAME is not valid UTF-8") end
    local db = open_db(o)
    local n = db:purge { name = o.NAME, state = o.state, older_than = o.older_than }
    db:close()
    if o.json then
      out(text.json(text.object("purged", n)), "\n")
    else
      local what = o.state == "failed" and "failed job" or o.state == "scheduled" and "waiting job" or "job"
      out(("purged %s\n"):format(plural(n, what)))
    end
  end,
}

local function pause_command(on)
  local verb = on and "pause" or "resume"
  return {
    summary = on and "stop starting the jobs of a name, on every worker"
      or "start the jobs of a paused name again",
    synopsis = { verb .. " NAME [--json]" },
    description = on and [[
Pauses job name NAME, durably, on every worker: none starts a job of it from
then on (one claimed before the pause goes back unattempted within a
second; running ones finish).  New jobs of it are scheduled as usual and
wait.  `stats` shows it; `resume NAME` ends it.]] or [[
Resumes a paused job name: its due jobs start at once.]],
    options = { JSON, DATABASE },
    args = { { "NAME" } },
    run = function(o)
      if o.NAME == "" then usage_error("NAME must not be empty") end
      if not utf8.len(o.NAME) then usage_error("NAME is not valid UTF-8") end
      local db = open_db(o)
      local changed = db:pause(o.NAME, on)
      db:close()
      if o.json then
        out(text.json(text.object(on and "paused" or "resumed", changed)), "\n")
      elseif changed then
        out(("%s %s\n"):format(on and "paused" or "resumed", o.NAME))
      else
        out(("%s %s\n"):format(o.NAME, on and "was already paused" or "was not paused"))
      end
    end,
  }
end

COMMANDS.pause = pause_command(true)
COMMANDS.resume = pause_command(false)

-- A rate limit as text: "100/60s", "1000/1s", "5/1m30s".

COMMANDS.limit = {
  summary = "limit how many jobs of a name run at once, or start per period, on all workers together",
  synopsis = { "limit NAME [--concurrency N] [--rate N --per DURATION] [--by FIELD] [--json]",
    "limit NAME --none [--json]" },
  description = [[
Limits job name NAME, durably, across every worker and host.  --concurrency
N: at most N jobs running at once (a job claimed and not finished counts);
the others wait for a slot.  With --by FIELD, N at once in each partition
apart: FIELD is "key" (the job's key) or a top-level payload field (its
value as text; a job without it is in partition ""), and claims take the
partitions' jobs round-robin.  A dead worker's slots come back with its
leases.  --rate N --per DURATION (seconds, or like 1s, 1m, 1h): at most N
jobs start in any window of DURATION, smoothly (a burst of N/50, at least
1, then evenly; see the README); the others wait, never fail.  With --by,
each partition has its own.  A call replaces the name's limits; --none
lifts them.  `stats`
shows them (LIMIT).]],
  options = {
    { "--concurrency", value = "N", parse = integer_between(1, 2147483647), help = "at most N at once" },
    { "--by", value = "FIELD", help = "per partition: \"key\" or a payload field" },
    { "--rate", value = "N", parse = integer_between(1, 2147483647), help = "at most N starts per --per" },
    { "--per", value = "DURATION", parse = positive_duration, help = "the period of --rate" },
    { "--none", help = "no limit" },
    JSON, DATABASE,
  },
  args = { { "NAME" } },
  run = function(o)
    if o.NAME == "" then usage_error("NAME must not be empty") end
    if not utf8.len(o.NAME) then usage_error("NAME is not valid UTF-8") end
    if o.concurrency and o.none then usage_error("--concurrency and --none exclude each other") end
    if o.rate and o.none then usage_error("--rate and --none exclude each other") end
    if (o.rate == nil) ~= (o.per == nil) then usage_error("--rate and --per go together") end
    if o.per and o.per > 31536000 then usage_error("--per must be at most a year") end
    if not o.concurrency and not o.rate and not o.none then
      usage_error("missing --concurrency N or --rate N --per DURATION (or --none)")
    end
    if o.by and o.none then usage_error("--by and --none exclude each other") end
    if o.by and not o.concurrency and not o.rate then usage_error("--by goes with --concurrency or --rate") end
    if o.by and (o.by == "" or #o.by > 200 or o.by:find('[%z"\\]')) then
      usage_error("--by must be 1 to 200 bytes without NUL, '\"' or '\\'")
    end
    local db = open_db(o)
    local changed = db:limit(o.NAME, o.concurrency, o.by, o.rate, o.per)
    db:close()
    if o.json then
      out(text.json(text.object("changed", changed)), "\n")
    elseif o.none then
      out(changed and ("%s is no longer limited\n"):format(o.NAME) or ("%s was not limited\n"):format(o.NAME))
    else
      local what = {}
      local each = o.by and (" per %s"):format(o.by) or ""
      if o.concurrency then what[1] = ("%d at once%s"):format(o.concurrency, each) end
      if o.rate then
        local n, per = text.rate(o.rate, o.per):match("^(%d+)/(.*)$")
        what[#what + 1] = ("%s starts per %s%s"):format(n, per, each)
      end
      what = table.concat(what, ", ")
      out(changed and ("%s limited to %s\n"):format(o.NAME, what)
        or ("%s was already limited to %s\n"):format(o.NAME, what))
    end
  end,
}

COMMANDS.retry = {
  summary = "put a failed job (or every failed job) back to run now",
  synopsis = { "retry ID", "retry --all-failed [--name N] [--json]" },
  description = [[
A failed job runs again now, with a fresh set of attempts.  With
--all-failed, every failed job (of --name) does, except one whose key another
unfinished job holds.]],
  options = {
    { "--all-failed", help = "every failed job" },
    { "--name", value = "N", help = "with --all-failed: only jobs with this name" },
    JSON, DATABASE,
  },
  args = { { "ID", optional = true } },
  run = function(o)
    if o.all_failed and o.ID then usage_error("give ID or --all-failed, not both") end
    if not o.all_failed and not o.ID then usage_error("missing ID (or --all-failed)") end
    if o.name and not o.all_failed then usage_error("--name goes with --all-failed") end
    local db = open_db(o)
    if o.all_failed then
      local retried, skipped = db:retry_failed(o.name)
      db:close()
      if o.json then
        out(text.json(text.object("retried", retried, "skipped", skipped)), "\n")
      else
        out(("retried %d failed job%s\n"):format(retried, retried == 1 and "" or "s"))
      end
      if skipped > 0 then
        io.stderr:write(("%d failed job%s kept: another unfinished job holds %s key\n"):format(
          skipped, skipped == 1 and "" or "s", skipped == 1 and "its" or "their"))
      end
      return
    end
    local id = job_id(o.ID)
    local api = db:api()
    local done, err = api:retry(id)
    if done == nil then failure(errors.strip(err)) end
    if not done then explain(api, id, "retry") end
    db:close()
    if o.json then
      out(text.json(text.object("retried", 1, "skipped", 0)), "\n")
    else
      out(("job %d will run now\n"):format(id))
    end
  end,
}


local function stats_snapshot(db, json)
  local rows = db:stats()
  if json then
    local list = {}
    for i, r in ipairs(rows) do
      list[i] = text.object("name", r.name, "due", r.due, "later", r.later, "running", r.running,
        "failed", r.failed, "oldest_due_late_seconds", r.late and math.floor(r.late * 1000 + 0.5) / 1000,
        "done_last_minute", r.done_last_minute, "paused", r.paused, "concurrency", r.concurrency,
        "by", r.by, "rate", r.rate, "per", r.per)
    end
    return text.json(text.array(list)) .. "\n"
  end
  if #rows == 0 then return "no jobs\n" end
  local cells = {}
  for i, r in ipairs(rows) do
    cells[i] = { r.name, tostring(r.due), tostring(r.later), tostring(r.running), tostring(r.failed),
      r.late and text.duration(r.late) or "-", tostring(r.done_last_minute), r.paused and "paused" or "-",
      text.limit(r) }
  end
  return text.table({ "NAME", "DUE", "LATER", "RUNNING", "FAILED", "OLDEST DUE", "DONE/MIN", "PAUSED", "LIMIT" },
    cells, { false, true, true, true, true, true, true, false, true })
end

COMMANDS.stats = {
  summary = "per-name counts, lateness and throughput",
  synopsis = { "stats [--watch [--interval DURATION]] [--json]" },
  description = [[
Per job name: DUE (waiting although due), LATER (waiting for their time),
RUNNING, FAILED, OLDEST DUE (how late the oldest due job is), DONE/MIN
(jobs completed in the last 60 seconds), PAUSED (see pause; a paused name
without jobs is listed too) and LIMIT (see limit, "N per FIELD" with --by,
"N/DURATION" for a rate, both as "5, 100/1m"; a limited name too).  --watch refreshes every --interval
(default 2s), in place on a terminal, until Ctrl-C; with --json, one array
per line.]],
  options = {
    { "--watch", help = "refresh until interrupted" },
    { "--interval", value = "DURATION", parse = positive_duration, help = "with --watch (default 2s)" },
    JSON, DATABASE,
  },
  run = function(o)
    if o.interval and not o.watch then usage_error("--interval goes with --watch") end
    local db, label = open_db(o)
    if not o.watch then
      local s = stats_snapshot(db, o.json)
      db:close()
      if s == "no jobs\n" then io.stderr:write(s) else out(s) end
      return
    end
    local process = core.process
    local tty = not o.json and process.isatty(1)
    local every = (o.interval or 2) < 60 and ("%gs"):format(o.interval or 2) or text.duration(o.interval)
    assert(process.block_signals())
    io.stdout:setvbuf("full")
    while true do
      local s = stats_snapshot(db, o.json)
      if tty then
        out("\27[H\27[2J", os.date("%Y-%m-%d %H:%M:%S"), "  (every ", every,
          "; Ctrl-C to stop)  ", label, "\n\n", s)
      elseif o.json then
        out(s)
      else
        out(os.date("%Y-%m-%d %H:%M:%S"), "  ", label, "\n", s, "\n")
      end
      io.stdout:flush()
      local sig = process.wait_signal(o.interval or 2)
      while sig == "CHLD" or sig == "RTMIN" do sig = process.wait_signal(o.interval or 2) end
      if sig then break end
    end
    db:close() -- (the signals stay blocked: a second Ctrl-C must not kill the exit)
  end,
}

COMMANDS.metrics = {
  summary = "print Prometheus metrics once (the web server's /metrics)",
  synopsis = { "metrics" },
  description = [[
Prints the scheduler's metrics in Prometheus' text format, once: jobs by
name and state, the oldest due job's lateness, paused names, the
completed and failed totals of every worker of the database (counters kept
in the database), and the listeners' durations and start lateness as
history keeps them.  For a textfile collector or a scrape through a wrapper;
`web` serves the same text on /metrics.]],
  options = { DATABASE },
  run = function(o)
    local db = open_db(o)
    local ok, body = pcall(require("scheduler.metrics").render, db:api())
    db:close()
    if not ok then failure(errors.strip(tostring(body))) end
    out(body)
  end,
}

COMMANDS.migrate = {
  summary = "create or upgrade the database schema",
  synopsis = { "migrate [--json]" },
  description = [[
Creates the schema `scheduler` or applies the migrations it lacks, and prints
its version.  The only admin command that creates an SQLite file.]],
  options = { JSON, DATABASE },
  run = function(o)
    local db = open_db(o, true)
    local version = db:schema_version()
    db:close()
    out(o.json and text.json(text.object("schema_version", version)) or ("schema version " .. version), "\n")
  end,
}

COMMANDS.health = {
  summary = "exit 0 if the database answers with the current schema (probes)",
  synopsis = { "health [--max-late DURATION]" },
  description = [=[
For container and load-balancer probes: connects to the database as `run`
does (same string, same credentials; the schema is brought up to date as
by any command), and prints one line: "healthy: ..." and exit 0, or
"unhealthy: WHY" and exit 1 (unreachable, refused, a failed migration, no
SQLite file).  With --max-late, a due job waiting longer than that also
makes it unhealthy: nothing is working the queue (all workers dead, hung
or too few).  Whether the processes on this host are alive is the service
manager's part: run's WATCHDOG=1 under systemd; the supervisor as the
container's PID 1.]=],
  options = {
    { "--max-late", value = "DURATION", parse = positive_duration,
      help = "unhealthy when a due job waits longer than this" },
    DATABASE,
  },
  run = function(o)
    local db = open_db(o)
    local api = db:api()
    local version, err = api:schema_version()
    local why
    if version == nil then
      why = errors.strip(tostring(err)):gsub("^scheduler: ", ""):gsub("^schema_version: ", "")
    elseif o.max_late then
      local rows, serr = api:stats()
      if rows == nil then
        why = errors.strip(tostring(serr)):gsub("^scheduler: ", ""):gsub("^stats: ", "")
      else
        local worst
        for _, r in ipairs(rows) do
          if r.late and r.late > o.max_late and (not worst or r.late > worst.late) then worst = r end
        end
        if worst then
          why = ("%s: a due job has waited %s (--max-late %s)"):format(text.cell(worst.name),
            text.duration(worst.late), text.duration(o.max_late))
        end
      end
    end
    db:close()
    if why then
      out("unhealthy: ", (why:gsub("%s+", " ")), "\n")
      return 1
    end
    out(("healthy: schema version %d"):format(version), "\n")
    return 0
  end,
}

COMMANDS.web = {
  summary = "serve the web dashboard (overview, jobs, failed jobs by error, actions)",
  synopsis = { "web [--listen HOST:PORT] [--read-only] [--token T]" },
  description = [[
Serves a dashboard over HTTP (lua-http on cqueues): per-name overview, job
lists by state with search (name, key, payload text), each job's payload,
attempts, whole error and history, failed jobs grouped by error fingerprint,
and actions: retry, cancel, delete, retry every failed job of a name, retry
or discard a whole error group.  Pages refresh themselves; /metrics serves
the Prometheus text when scheduler.metrics is installed.
It listens on 127.0.0.1:8080 by default.  Another address than loopback
needs a token (--token, else $LUA_SCHEDULER_WEB_TOKEN): every request must
then carry it (the sign-in page sets a cookie; or Authorization: Bearer T,
or Basic with T as the password).  Actions are POSTs checked for a CSRF
token and the same origin; --read-only shows none and refuses them all.
HOST:PORT: 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080; port 0: any free port
(the URL is printed).  SIGINT/SIGTERM stop it.]],
  options = {
    { "--listen", value = "HOST:PORT", help = "address to listen on (default 127.0.0.1:8080)" },
    { "--read-only", help = "show no action and refuse every POST" },
    { "--token", value = "T", help = "require this token (needed off loopback; default:"
      .. " $LUA_SCHEDULER_WEB_TOKEN)" },
    DATABASE,
  },
  run = function(o)
    local web = require "scheduler.web"
    local host, port = web.parse_listen(o.listen or "127.0.0.1:8080")
    if not host then usage_error(("--listen: bad HOST:PORT %q: %s"):format(o.listen, port)) end
    local token = o.token
    if token then
      core.process.hide_arg(token) -- (other users see the command line)
    else
      token = os.getenv("LUA_SCHEDULER_WEB_TOKEN")
      if token == "" then token = nil end
    end
    if token and (#token < 12 or token:find("[%c%s]")) then
      usage_error("--token: expected at least 12 characters, without spaces or control characters")
    end
    if not web.is_loopback(host) and not token then
      usage_error(("--listen %s is not a loopback address: give --token (or LUA_SCHEDULER_WEB_TOKEN)"
        .. " so that only those who have it see and change the jobs"):format(o.listen))
    end
    web.use_lua_http()
    if not pcall(require, "http.server") then
      failure("the web dashboard needs lua-http (Debian: apt install lua-http; LuaRocks: http)")
    end
    local database = database_of(o)
    local db, label = open_db(o)
    db:schema_version() -- connect now: a wrong database fails at start, not at the first page
    local secrets = core.database_secrets(database)
    local ok, err = web.serve {
      api = db:api(), database = label, secrets = secrets, read_only = o.read_only, token = token,
      listen = o.listen or "127.0.0.1:8080",
      on_ready = function(url)
        out("listening on ", url, o.read_only and " (read-only)" or "", "\n")
        io.stdout:flush()
      end,
    }
    db:close()
    if not ok then failure(("web: cannot listen on %s: %s"):format(o.listen or "127.0.0.1:8080", tostring(err))) end
  end,
}

local function rfc3339_in(t, zone)
  local offset = zone and zone:offset_at(t) or 0
  if offset == 0 then return text.utc_time(t):gsub("%.000Z$", "Z") end
  local sign = offset < 0 and "-" or "+"
  local a = math.abs(offset)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t + offset))
    .. ("%s%02d:%02d"):format(sign, a // 3600, a % 3600 // 60)
end

COMMANDS.cron = {
  summary = "recurring schedules",
  synopsis = { "cron list [--json]", "cron remove ID", "cron next EXPR [--tz ZONE] [--count N] [--json]" },
  subcommands = {
    list = {
      summary = "list the recurring schedules",
      synopsis = { "cron list [--json]" },
      description = "Every schedule declared with scheduler.cron(): id, expression, zone, job name, next slot,"
        .. " owner (the --cron-owner of the listener files that declare it; - : declared from code).",
      options = { JSON, DATABASE },
      run = function(o)
        local db = open_db(o)
        local rows, err = db:api():crons()
        if not rows then failure(errors.strip(err)) end
        db:close()
        if o.json then
          local list = {}
          for i, c in ipairs(rows) do
            list[i] = text.object("id", c.id, "expr", c.expr, "tz", c.tz, "name", c.name,
              "next_at", c.next_at ~= math.huge and text.utc_time(c.next_at) or nil,
              "catch_up", c.catch_up, "backfill", c.backfill, "owner", c.owner or text.null)
          end
          out(text.json(text.array(list)), "\n")
          return
        end
        if #rows == 0 then io.stderr:write("no recurring schedules\n") return end
        local cells = {}
        for i, c in ipairs(rows) do
          cells[i] = { c.id, c.expr, c.tz, c.name,
            c.next_at ~= math.huge and text.utc_time(c.next_at) or "never", c.owner or "-" }
        end
        out(text.table({ "ID", "EXPR", "TZ", "NAME", "NEXT", "OWNER" }, cells))
      end,
    },
    remove = {
      summary = "remove a recurring schedule",
      synopsis = { "cron remove ID" },
      description = "Removes the schedule; jobs it already created stay.  Exit 1 if there is no such schedule.",
      options = { DATABASE },
      args = { { "ID" } },
      run = function(o)
        local db = open_db(o)
        local done, err = db:api():uncron(o.ID)
        if done == nil then failure(errors.strip(err)) end
        db:close()
        if not done then failure(("no recurring schedule %q"):format(o.ID)) end
        out(("removed %s\n"):format(o.ID))
      end,
    },
    next = {
      summary = "print the next fire times of a cron expression",
      synopsis = { "cron next EXPR [--tz ZONE] [--count N] [--json]" },
      description = [[
EXPR: 5 fields (minute hour day-of-month month day-of-week), 6 with leading
seconds, @daily/@hourly/..., or "@every 1h30m".  Times are printed in RFC
3339 with ZONE's offset (default UTC).  No database is needed.  An EXPR
that never fires ("0 0 31 2 *") is a usage error.]],
      options = {
        { "--tz", value = "ZONE", help = "UTC (default), local, or an IANA name like Europe/Paris" },
        { "--count", value = "N", parse = integer_between(1, 10000), help = "how many (default 5)" },
        JSON,
      },
      args = { { "EXPR" } },
      run = function(o)
        local ok, times = pcall(scheduler.next_times, o.EXPR, o.count or 5, { tz = o.tz })
        if not ok then usage_error(errors.strip(tostring(times):gsub("^scheduler: next_times: ", ""))) end
        -- (printing nothing and exiting 0 would read as "fine")
        if #times == 0 then usage_error(("EXPR %q never fires: no date matches it"):format(o.EXPR), false) end
        local zone
        if o.tz then zone = require("scheduler.tz").get(o.tz) end
        local list = {}
        for i, t in ipairs(times) do
          local s = rfc3339_in(t, zone)
          if o.json then list[i] = text.object("time", s, "unix", t) else out(s, "\n") end
        end
        if o.json then out(text.json(text.array(list)), "\n") end
      end,
    },
  },
}

local ORDER = { "run", "schedule", "jobs", "show", "cancel", "delete", "purge", "retry", "pause", "resume", "limit", "stats", "metrics", "migrate",
  "health", "cron", "web" }

---------------------------------------------------------------------------
-- parsing and help
---------------------------------------------------------------------------

local function key_of(flag)
  return (flag:gsub("^%-%-", ""):gsub("%-", "_"))
end

local function usage_text(spec, path)
  local lines = {}
  for i, s in ipairs(spec.synopsis or { path }) do
    lines[#lines + 1] = (i == 1 and "Usage: " or "       ") .. PROG .. " " .. s
  end
  return table.concat(lines, "\n") .. "\n"
end

local function help_text(spec, path)
  local parts = { usage_text(spec, path) }
  if spec.summary then parts[#parts + 1] = "\n" .. spec.summary:gsub("^%l", string.upper) .. ".\n" end
  if spec.description then parts[#parts + 1] = "\n" .. spec.description .. "\n" end
  if spec.subcommands then
    parts[#parts + 1] = "\nCommands:\n"
    local names = {}
    for name in pairs(spec.subcommands) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      parts[#parts + 1] = ("  %-10s %s\n"):format(name, spec.subcommands[name].summary)
    end
  end
  local opts = {}
  for _, opt in ipairs(spec.options or {}) do
    opts[#opts + 1] = { opt[1] .. (opt.value and (" " .. opt.value) or ""), opt.help or "" }
  end
  opts[#opts + 1] = { "-h, --help", "show this help" }
  parts[#parts + 1] = "\nOptions:\n"
  for _, o in ipairs(opts) do parts[#parts + 1] = ("  %-22s %s\n"):format(o[1], o[2]) end
  return table.concat(parts)
end

local function top_help()
  local parts = {
    "Usage: " .. PROG .. " [--database URL] COMMAND [OPTIONS] [ARGS]\n\n",
    "Run Lua listener files for durable jobs stored in SQLite or PostgreSQL;\nschedule, ",
    "inspect, cancel and retry those jobs.\n\nCommands:\n",
  }
  for _, name in ipairs(ORDER) do
    parts[#parts + 1] = ("  %-10s %s\n"):format(name, COMMANDS[name].summary)
  end
  parts[#parts + 1] = [[

Options:
  -h, --help     show this help; `lua-scheduler COMMAND --help` for a command
  --version      print the version

The database is --database URL (before or after the command) or
$LUA_SCHEDULER_DATABASE, else the SQLite file scheduler.db in the working
directory; each command names it on stderr.  Only migrate and run create an
SQLite file that does not exist.
Exit status: 0 success, 1 runtime failure (database, no such job), 2 usage
error.
]]
  return table.concat(parts)
end

local function is_option(a)
  return a:sub(1, 1) == "-" and a ~= "-" and not a:match("^%-%.?%d")
end

--- Parse argv[first..] for `spec` into an options table: option keys
-- ("--max-attempts" -> max_attempts), argument names (o.NAME; a `many`
-- argument is a list).  Raises usage errors.
local function parse(spec, argv, first)
  local o, positional = {}, {}
  local i, options_done = first, false
  while i <= #argv do
    local a = argv[i]
    if options_done or not is_option(a) then
      positional[#positional + 1] = a
    elseif a == "--" then
      options_done = true
    else
      local flag, value = a:match("^(%-%-[^=]+)=(.*)$")
      flag = flag or a
      local opt
      for _, candidate in ipairs(spec.options or {}) do
        if candidate[1] == flag then opt = candidate end
      end
      if not opt then usage_error("unknown option " .. flag) end
      if opt.value then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then usage_error(("%s needs a value (%s)"):format(flag, opt.value)) end
        end
        local v, why = value, nil
        if opt.parse then v, why = opt.parse(value) end
        if v == nil then usage_error(("%s: bad %s %q: %s"):format(flag, opt.value, value, why)) end
        o[key_of(flag)] = v
      else
        if value ~= nil then usage_error(("%s takes no value"):format(flag)) end
        o[key_of(flag)] = true
      end
    end
    i = i + 1
  end
  local args, n = spec.args or {}, 1
  for _, arg in ipairs(args) do
    if arg.many then
      if positional[n] == nil then usage_error("missing " .. arg[1]) end
      o[arg[1]] = table.move(positional, n, #positional, 1, {})
      n = #positional + 1
    else
      if positional[n] == nil and not arg.optional then usage_error("missing " .. arg[1]) end
      o[arg[1]] = positional[n]
      n = n + 1
    end
  end
  if positional[n] ~= nil then usage_error(("unexpected argument %q"):format(positional[n])) end
  return o
end

local function wants_help(argv, first)
  for i = first, #argv do
    if argv[i] == "--" then return false end
    if argv[i] == "-h" or argv[i] == "--help" then return true end
  end
  return false
end

--- Run the command line `argv` (arg[1..n]; arg[-n..0] name the interpreter
-- and launcher, used to start workers).  Returns the exit status.
function cli.main(argv)
  argv = argv or {}
  cli.arg = argv
  local spec, path, first = nil, PROG, 1
  local ok, result = xpcall(function()
    -- Global options, before the command: --database (after the command, as
    -- every command's own option, it wins over one given before).
    local global = {}
    while argv[first] ~= nil do
      local v = argv[first]:match("^%-%-database=(.*)$")
      if argv[first] == "--database" then
        v = argv[first + 1]
        if v == nil then usage_error("--database needs a value (URL)") end
        first = first + 1
      elseif v == nil then
        break
      end
      global.database, first = v, first + 1
    end
    local a = argv[first]
    if a == nil then usage_error("missing COMMAND") end
    if a == "-h" or a == "--help" then
      out(top_help())
      return 0
    end
    if a == "--version" then
      out(scheduler._VERSION, "\n")
      return 0
    end
    if is_option(a) then usage_error("unknown option " .. a:match("^[^=]*")) end
    spec = COMMANDS[a]
    if not spec then usage_error(("unknown command %q"):format(a)) end
    path, first = PROG .. " " .. a, first + 1
    if spec.subcommands then
      local sub = argv[first]
      if sub == nil or sub == "-h" or sub == "--help" then
        if sub == nil then usage_error("missing subcommand") end
        out(help_text(spec, path))
        return 0
      end
      if not spec.subcommands[sub] then usage_error(("unknown subcommand %q"):format(sub)) end
      spec, path, first = spec.subcommands[sub], path .. " " .. sub, first + 1
    end
    if wants_help(argv, first) then
      out(help_text(spec, path))
      return 0
    end
    if global.database then hide_password(global.database) end
    local o = parse(spec, argv, first)
    if o.database then hide_password(o.database) end
    -- (a command without a database, such as `cron next`, ignores it)
    if o.database == nil then o.database = global.database end
    return spec.run(o) or 0
  end, function(e)
    if errors.of(e) then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return result end
  local e = errors.of(result)
  if not e then
    io.stderr:write(PROG, ": internal error: ", tostring(result), "\n")
    return 1
  end
  if e.kind == "failure" then
    io.stderr:write(PROG, ": ", e.message, "\n")
    return 1
  end
  io.stderr:write(path, ": ", e.message, "\n")
  if e.show_usage then
    io.stderr:write(spec and usage_text(spec, path) or ("Usage: " .. PROG .. " [--database URL] COMMAND [OPTIONS] [ARGS]\n"),
      "Run '", path, " --help' for more.\n")
  end
  return 2
end

cli.COMMANDS = COMMANDS

return cli
