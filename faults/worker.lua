-- faults/worker.lua: a standalone worker, without the supervisor: a program
-- using the library directly, with a short lease (scenario 2: a dead
-- worker's jobs run again once its lease expires).
--
--   lua5.4 faults/worker.lua LEASE
--
-- It runs faults/listeners/record.lua's listeners (as `lua-scheduler run` does)
-- on LUA_SCHEDULER_DATABASE until SIGTERM.
local scheduler = require "scheduler"
local lease = assert(tonumber(arg[1]), "usage: worker.lua LEASE")
local here = arg[0]:match("^(.*)/[^/]*$") or "."
scheduler.configure { lease = lease }
dofile(here .. "/listeners/record.lua")
assert(scheduler.run())
