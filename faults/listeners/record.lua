-- faults/listeners/record.lua: the listener of every fault scenario.  Each
-- run appends one line to $FAULTS_RECORDS/<pid>.log before doing anything
-- else (an unbuffered write(2): it survives a kill -9 of the worker):
--
--   <job id> <attempt> <worker pid> <start, host clock> <run_at> <seq>
--
-- The payload steers it: { seq = n (copied to the line), exit = status
-- (then end the worker process: a job that crashes its worker), sleep =
-- seconds (then return; at concurrency > 1 without blocking the others), sleep_first = seconds (the same, on attempt 1
-- only), fail = message (then raise), wait = a directory (then return once
-- the file <wait>/<pid> exists, or `sleep` seconds passed: the scenario
-- decides which worker's run ends when) }.  It also has the listener of
-- scenario stale_write (below).
local scheduler = require "scheduler"
local core = require "scheduler.core"
local system = require "system"

--- Wait `seconds`: in a worker at concurrency > 1 (`run --concurrency N`:
-- each job in a coroutine of a cqueues loop) on a cqueues timer, so the
-- other jobs go on meanwhile; else by blocking the process.
local function nap(seconds)
  local ok, cqueues = pcall(require, "cqueues")
  if ok and cqueues.running() then
    cqueues.sleep(seconds)
  else
    system.sleep(seconds)
  end
end

local dir = os.getenv("FAULTS_RECORDS")
local pid = core.process.getpid()
local out

--- The record of a run, before anything else.
local function record(p, job)
  if not out then
    out = assert(io.open(("%s/%d.log"):format(assert(dir, "FAULTS_RECORDS is not set"), pid), "a"))
    out:setvbuf("no")
  end
  local seq = type(p) == "table" and math.tointeger(p.seq) or -1
  out:write(("%d %d %d %.6f %.6f %d\n"):format(job.id, job.attempt, pid, scheduler.now(), job.run_at, seq))
end

scheduler.on("fault", function(p, job)
  record(p, job)
  if type(p) == "table" then
    if p.exit then os.exit(p.exit) end
    if type(p.wait) == "string" then
      local deadline = scheduler.now() + (tonumber(p.sleep) or math.huge)
      local release = ("%s/%d"):format(p.wait, pid)
      while scheduler.now() < deadline do
        local f = io.open(release, "rb")
        if f then
          f:close()
          break
        end
        system.sleep(0.05)
      end
    elseif p.sleep then
      nap(p.sleep)
    end
    if p.sleep_first and job.attempt == 1 then nap(p.sleep_first) end
    if p.fail then error(p.fail, 0) end
  end
end)

-- Scenario stale_write: jobs named "fault_stale" block in C (sleep) past
-- their time limit, for `sleep` seconds on attempt 1 and `again` seconds
-- after, so that the worker stops renewing the lease (heartbeat.h) and the
-- job is claimed again elsewhere while the first run goes on.
scheduler.on("fault_stale", function(p, job)
  record(p, job)
  system.sleep(job.attempt == 1 and p.sleep or p.again)
end, { timeout = 0.3 })
