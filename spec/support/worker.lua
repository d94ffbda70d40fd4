-- spec/support/worker.lua: a scheduler worker process for the specs that need
-- several processes (started by helper.spawn).  It uses the module-level
-- (default instance) API, like a real worker script would.
--
-- Environment:
--   WORKER_DIR         directory for the files below (required)
--   WORKER_NAMES       comma-separated listener names (required)
--   WORKER_MODE        run      scheduler.run(); exit 0 if it returned true
--                      seconds  scheduler.run{ seconds = WORKER_SECONDS }
--                      drain    scheduler.run{ drain = true }, count -> DIR/drained
--                      restore  run{ seconds = WORKER_SECONDS or 0.3 }, then write
--                               DIR/after and block 10 s (a signal should kill it),
--                               then write DIR/survived and exit 0
--                      produce  schedule jobs for the first name until killed
--                               (or WORKER_COUNT of them), each recorded as a
--                               "scheduled" result once schedule() returned
--                               its id; WORKER_DELAY: seconds ahead (default 0)
--                      (default: run)
--   WORKER_SECONDS     seconds for the seconds/restore modes
--   WORKER_SLEEP       seconds every listener call blocks (default 0); a table
--                      payload's `sleep` field overrides it per job
--   WORKER_FIFO        the FIFO a payload `{ fifo = true }` blocks on (below)
--   WORKER_LEASE       the `lease` option
--   WORKER_BATCH_MAX   the `batch_max` option
--   WORKER_TIMEOUT     the listeners' `timeout` option (on())
--   WORKER_LISTENER_MAX the listeners' `max_attempts` option (on())
--   WORKER_CONCURRENCY the `concurrency` option: run() then runs the jobs in
--                      coroutines of a cqueues loop
--   WORKER_WAIT        seconds every listener call waits without blocking
--                      (cqueues.sleep; with WORKER_CONCURRENCY); a table
--                      payload's `wait` field overrides it per job
--   WORKER_DATABASE    the `database` option (default: LUA_SCHEDULER_DATABASE)
--   WORKER_HISTORY     the `history` option (how long finished jobs are kept)
--   WORKER_STOP_AFTER  call scheduler.stop() from the listener after this many jobs
--   WORKER_SCHEDULE    schedule this many due-now jobs for the first name
--                      before running (payload { from = <pid>, n = i })
--   WORKER_LOG         "stderr" (default): log to stderr; "false": no logging
--   WORKER_CRON        "<id> <expr...>": declare that recurring schedule for
--                      the first name before running (as every worker would)
--   WORKER_ID          "default": the library's default worker id (written
--                      to DIR/id) instead of "spec-worker:<pid>"
--
-- Files in WORKER_DIR:
--   pid       this process's pid, written first thing
--   id        its worker id (WORKER_ID=default)
--   ready     written just before entering run
--   results   "<jobid> <pid> <time> <event> <attempt>" lines, event "start"
--             when the listener is entered and "done" just before it returns;
--             written unbuffered so that kill -9 loses nothing
--   drained   (drain mode) what run{drain=true} returned
--   returned  what run returned: "<value> <err>"
-- A table payload with a `fail` field makes the listener raise that message
-- (after the start line); one with `exit` makes it end the process with
-- that code (spec.crash: _exit, no exit handlers; after the start line: a job that crashes its worker).  One with a
-- `fifo` field (a path, or true for this process's own WORKER_FIFO) makes it
-- block in C, opening that FIFO for reading until a writer opens it.
-- One with a `snooze` field (seconds) makes the listener return
-- scheduler.snooze(snooze) on its first `snooze_times` (default 1) calls
-- for that job in this process (after the start line and a "snooze" line),
-- and return normally after that ("done"); one with `forge` returns a
-- value that only looks like a snooze ("string": the string "snooze";
-- "table": a table with snooze's tostring and __metatable; "number": the
-- seconds), recorded as "done".
--
-- Exit status: 0 when run returned true (drain: a number), 1 otherwise,
-- 2 on bad setup.  The wrapper started by helper.spawn records it in DIR/exit.

local dir = os.getenv("WORKER_DIR")
if not dir then
  io.stderr:write("worker: WORKER_DIR is not set\n")
  os.exit(2)
end

local function write_file(name, data)
  local tmp = dir .. "/" .. name .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(data)
  f:close()
  assert(os.rename(tmp, dir .. "/" .. name))
end

local function getpid()
  local f = io.open("/proc/self/stat", "rb")
  local s = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(s:match("^(%d+)")) or 0
end

local pid = getpid()
write_file("pid", tostring(pid) .. "\n")

local ok_sched, scheduler = pcall(require, "scheduler")
if not ok_sched then
  io.stderr:write("worker: cannot load scheduler: ", tostring(scheduler), "\n")
  os.exit(2)
end

local has_system, system = pcall(require, "system")
local clock = has_system and system.gettime or scheduler.now

local function sleep(seconds)
  local deadline = clock() + seconds
  while true do
    local left = deadline - clock()
    if left <= 0 then return end
    if has_system then
      system.sleep(math.min(left, 0.05))
    else
      -- busy-wait fallback: blocks like a CPU-bound listener would
    end
  end
end

local function split(s)
  local out = {}
  for part in (s or ""):gmatch("[^,]+") do out[#out + 1] = part end
  return out
end

local names = split(os.getenv("WORKER_NAMES"))
if #names == 0 then
  io.stderr:write("worker: WORKER_NAMES is not set\n")
  os.exit(2)
end

local mode = os.getenv("WORKER_MODE") or "run"
local default_sleep = tonumber(os.getenv("WORKER_SLEEP") or "") or 0
local stop_after = tonumber(os.getenv("WORKER_STOP_AFTER") or "")

local opts = { worker_id = ("spec-worker:%d"):format(pid) }
if os.getenv("WORKER_ID") == "default" then
  opts.worker_id = require("scheduler.core").default_worker_id()
  write_file("id", opts.worker_id)
end
if os.getenv("WORKER_LEASE") then opts.lease = tonumber(os.getenv("WORKER_LEASE")) end
if os.getenv("WORKER_BATCH_MAX") then opts.batch_max = tonumber(os.getenv("WORKER_BATCH_MAX")) end
if os.getenv("WORKER_DATABASE") then opts.database = os.getenv("WORKER_DATABASE") end
if os.getenv("WORKER_CONCURRENCY") then opts.concurrency = tonumber(os.getenv("WORKER_CONCURRENCY")) end
if os.getenv("WORKER_HISTORY") then opts.history = os.getenv("WORKER_HISTORY") end
local default_wait = tonumber(os.getenv("WORKER_WAIT") or "") or 0
if os.getenv("WORKER_LOG") == "false" then
  opts.log = false
else
  opts.log = function(level, message)
    io.stderr:write(("[%.3f] %s %s\n"):format(clock(), tostring(level), tostring(message)))
  end
end

scheduler.configure(opts)

local results = assert(io.open(dir .. "/results", "a"))
results:setvbuf("no")
local function record(id, event, attempt)
  results:write(("%d %d %.6f %s %d\n"):format(id, pid, clock(), event, attempt or 0))
end

local count = 0
local calls = {} -- calls per job id in this process (snooze)
local forged = {
  string = function() return "snooze" end,
  number = function() return 5 end,
  table = function()
    return setmetatable({ seconds = 5 }, { __metatable = "scheduler.snooze", __name = "scheduler.Snooze",
      __tostring = function() return "scheduler.snooze(5)" end })
  end,
}
local function listener(payload, job)
  record(job.id, "start", job.attempt)
  calls[job.id] = (calls[job.id] or 0) + 1
  local s = default_sleep
  if type(payload) == "table" and type(payload.sleep) == "number" then s = payload.sleep end
  if s > 0 then sleep(s) end
  local w = default_wait
  if type(payload) == "table" and type(payload.wait) == "number" then w = payload.wait end
  if w > 0 then require("cqueues").sleep(w) end
  if type(payload) == "table" and payload.fifo then
    local path = payload.fifo == true and os.getenv("WORKER_FIFO") or payload.fifo
    local f = io.open(path, "r") -- blocks in open(2) until a writer comes
    if f then f:close() end
  end
  if type(payload) == "table" and payload.exit then require("spec.crash").exit(payload.exit) end
  if type(payload) == "table" and payload.fail then
    record(job.id, "fail", job.attempt)
    error(tostring(payload.fail))
  end
  if type(payload) == "table" and type(payload.snooze) == "number"
    and calls[job.id] <= (tonumber(payload.snooze_times) or 1) then
    record(job.id, "snooze", job.attempt)
    return scheduler.snooze(payload.snooze)
  end
  record(job.id, "done", job.attempt)
  count = count + 1
  if stop_after and count >= stop_after then scheduler.stop() end
  if type(payload) == "table" and forged[payload.forge] then return forged[payload.forge]() end
end

local listener_opts = { timeout = tonumber(os.getenv("WORKER_TIMEOUT") or ""),
  max_attempts = tonumber(os.getenv("WORKER_LISTENER_MAX") or "") }
for _, name in ipairs(names) do scheduler.on(name, listener, listener_opts) end

local to_schedule = tonumber(os.getenv("WORKER_SCHEDULE") or "") or 0
for i = 1, to_schedule do
  local id, err = scheduler.schedule(names[1], { from = pid, n = i })
  if not id then
    io.stderr:write("worker: schedule failed: ", tostring(err), "\n")
    os.exit(1)
  end
end

local cron_decl = os.getenv("WORKER_CRON")
if cron_decl then
  local cid, expr = cron_decl:match("^(%S+)%s+(.+)$")
  local ok, err = scheduler.cron(cid, expr, names[1], { from = pid })
  if not ok then
    io.stderr:write("worker: cron failed: ", tostring(err), "\n")
    os.exit(1)
  end
end

local function returned(v, err)
  write_file("returned", ("%s %s\n"):format(tostring(v), tostring(err)))
end

write_file("ready", ("%.6f\n"):format(clock()))

if mode == "run" then
  local v, err = scheduler.run()
  returned(v, err)
  os.exit(v == true and 0 or 1)
elseif mode == "seconds" then
  local v, err = scheduler.run{ seconds = tonumber(os.getenv("WORKER_SECONDS") or "") or 5 }
  returned(v, err)
  os.exit(v == true and 0 or 1)
elseif mode == "drain" then
  local n, err = scheduler.run{ drain = true }
  returned(n, err)
  write_file("drained", tostring(n) .. "\n")
  os.exit(math.type(n) == "integer" and 0 or 1)
elseif mode == "restore" then
  local v, err = scheduler.run{ seconds = tonumber(os.getenv("WORKER_SECONDS") or "") or 0.3 }
  returned(v, err)
  write_file("after", ("%.6f\n"):format(clock()))
  sleep(10)
  write_file("survived", ("%.6f\n"):format(clock()))
  os.exit(0)
elseif mode == "produce" then
  local delay = tonumber(os.getenv("WORKER_DELAY") or "") or 0
  local limit = tonumber(os.getenv("WORKER_COUNT") or "")
  local n = 0
  while not limit or n < limit do
    local id, err = scheduler.schedule(names[1], { from = pid, n = n }, { delay = delay })
    if not id then
      returned(id, err)
      os.exit(1)
    end
    record(id, "scheduled")
    n = n + 1
  end
  returned(n, nil)
  os.exit(0)
else
  io.stderr:write("worker: unknown WORKER_MODE ", mode, "\n")
  os.exit(2)
end
