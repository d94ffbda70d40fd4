-- faults/probe.lua: the probe producer of the bulk_insert scenario.  One
-- schedule() every INTERVAL seconds, through the library, until the file
-- STOP exists (or SECONDS passed).  Odd probes are due at once, even ones
-- AHEAD seconds after the call (a worker sleeps until them).
--
--   lua5.4 faults/probe.lua OUT STOP SECONDS INTERVAL AHEAD
--
-- Each call's outcome is appended to OUT (unbuffered), one line per call:
--   "<seq> <start> <end> ok <id>"     schedule() returned an id
--   "<seq> <start> <end> err <msg>"   it returned nil, err
-- Job `seq` carries { seq = seq }.  The database comes from
-- LUA_SCHEDULER_DATABASE.
local scheduler = require "scheduler"
local system = require "system"

local out_path, stop_path = arg[1], arg[2]
local seconds, interval, ahead = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
assert(out_path and stop_path and seconds and interval and ahead,
  "usage: probe.lua OUT STOP SECONDS INTERVAL AHEAD")
local out = assert(io.open(out_path, "a"))
out:setvbuf("no")
local s = scheduler.new { log = false }
local now = scheduler.now
local stop_at = now() + seconds
local seq = 0
while now() < stop_at do
  local f = io.open(stop_path, "r")
  if f then
    f:close()
    break
  end
  seq = seq + 1
  local t0 = now()
  local id, err = s:schedule("fault", { seq = seq }, seq % 2 == 0 and { delay = ahead } or nil)
  local t1 = now()
  if id then
    out:write(("%d %.6f %.6f ok %d\n"):format(seq, t0, t1, id))
  else
    out:write(("%d %.6f %.6f err %s\n"):format(seq, t0, t1, (tostring(err):gsub("\n", " "))))
  end
  system.sleep(interval)
end
s:close()
out:write("done\n")
