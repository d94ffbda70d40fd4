-- faults/escape_worker.lua: a standalone worker whose run() meets Lua
-- errors that escape the loop (scenario escaped_error).  A job of the name
-- "fault_arm" makes every new table fail (spec.memlimit, a test-only
-- allocator), so that run() cannot build the arguments of the next job: a
-- real memory error, raised in the loop's own C code.  After each, the
-- worker checks that run() left nothing behind, allows allocations again
-- and runs again, until SIGTERM.
--
--   lua5.4 faults/escape_worker.lua OUT
--
-- OUT gets one line per run() that returned:
--   "<time> <returned> <threads> <int/term caught> <message>"
-- returned: "true" (SIGTERM), "nil" or "raised" (then it exits 1, as for
-- any error but the memory error it provokes); threads: of this process
-- (1: the heartbeat thread is gone); caught: SIGINT/SIGTERM handlers as
-- before the first run ("same") or not ("CHANGED").
local scheduler = require "scheduler"
local memlimit = require "spec.memlimit"

local out = assert(io.open(assert(arg[1], "usage: escape_worker.lua OUT"), "a"))
out:setvbuf("no")
local here = arg[0]:match("^(.*)/[^/]*$") or "."

local function status(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return s:match("\n" .. field .. ":%s*(%S+)")
end

-- SIGINT (bit 1) and SIGTERM (bit 14) of the mask of caught signals
local function int_term()
  local mask = tonumber(status("SigCgt"), 16)
  return mask & ((1 << 1) | (1 << 14))
end

scheduler.configure { log = false }
dofile(here .. "/listeners/record.lua") -- the "fault" listener
local records = assert(os.getenv("FAULTS_RECORDS"))
local pid = require("scheduler.core").process.getpid()
local rec = assert(io.open(("%s/%d.log"):format(records, pid), "a"))
rec:setvbuf("no")
scheduler.on("fault_arm", function(p, job)
  rec:write(("%d %d %d %.6f %.6f %d\n"):format(job.id, job.attempt, pid, scheduler.now(), job.run_at,
    type(p) == "table" and math.tointeger(p.seq) or -1))
  memlimit.refuse("tables")
end)

-- The threads of this process once run() returned.  A joined thread can
-- still be counted for a moment: pthread_join returns when the kernel
-- clears the thread's id, before it leaves the thread group that
-- /proc/self/status counts (seen once in CI: 2 right after a return).  So
-- ask again for up to 0.2 s; a thread still running stays counted.
local function threads()
  local n = status("Threads")
  for _ = 1, 200 do
    if n == "1" then break end
    require("scheduler.core").process.sleep(0.001)
    n = status("Threads")
  end
  return n
end

local before = int_term()
while true do
  local ok, v, err = pcall(scheduler.run)
  memlimit.allow()
  if not ok then v, err = "raised", v end
  out:write(("%.6f %s %s %s %s\n"):format(scheduler.now(), tostring(v), threads(),
    int_term() == before and "same" or "CHANGED", (tostring(err):gsub("\n", " "))))
  if v == true then break end
  if err ~= "scheduler: run: not enough memory" then os.exit(1) end -- not what we provoke
end
