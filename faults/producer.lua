-- faults/producer.lua: schedules jobs one at a time, through the library,
-- for a while (scenario 3: the database restarts meanwhile).
--
--   lua5.4 faults/producer.lua OUT SECONDS INTERVAL
--
-- Each call's outcome is appended to OUT (unbuffered), one line per call:
--   "<seq> <start> <end> ok <id>"     schedule() returned an id
--   "<seq> <start> <end> err <msg>"   it returned nil, err
-- Job `seq` carries { seq = seq } and is due 0-0.5 s after the call.  The
-- database comes from LUA_SCHEDULER_DATABASE.
local scheduler = require "scheduler"
local system = require "system"

local out_path, seconds, interval = arg[1], tonumber(arg[2]), tonumber(arg[3])
assert(out_path and seconds and interval, "usage: producer.lua OUT SECONDS INTERVAL")
local out = assert(io.open(out_path, "a"))
out:setvbuf("no")
local s = scheduler.new { log = false }
local now = scheduler.now
local stop_at = now() + seconds
local seq = 0
while now() < stop_at do
  seq = seq + 1
  local t0 = now()
  local id, err = s:schedule("fault", { seq = seq }, { delay = math.random() * 0.5 })
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
