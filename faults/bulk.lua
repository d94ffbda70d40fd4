-- faults/bulk.lua: one schedule_many() call of N jobs, in its own process
-- (the bulk_insert scenario).
--
--   lua5.4 faults/bulk.lua OUT N AHEAD
--
-- The list: N jobs named "fault", due AHEAD seconds from now, except the
-- first and the last, which are due at once (payload seq -1 and -2): the
-- workers must be woken for them when the call commits.  OUT gets the
-- lines "start <time>" just before the call and, after it,
-- "ok <time> <id of the first> <id of the last>" or "err <time> <message>".
local scheduler = require "scheduler"

local out_path, n, ahead = arg[1], math.tointeger(tonumber(arg[2])), tonumber(arg[3])
assert(out_path and n and n >= 2 and ahead, "usage: bulk.lua OUT N AHEAD")
local out = assert(io.open(out_path, "a"))
out:setvbuf("no")
local s = scheduler.new { log = false }
local later = scheduler.now() + ahead
local payload = {}
local list = {}
for i = 1, n do list[i] = { "fault", payload, later } end
list[1] = { "fault", { seq = -1 } }
list[n] = { "fault", { seq = -2 } }
assert(s:job(0) == nil) -- connected before the clock starts
out:write(("start %.6f\n"):format(scheduler.now()))
local ids, err = s:schedule_many(list)
if ids then
  out:write(("ok %.6f %d %d\n"):format(scheduler.now(), ids[1], ids[n]))
else
  out:write(("err %.6f %s\n"):format(scheduler.now(), (tostring(err):gsub("\n", " "))))
end
s:close()
