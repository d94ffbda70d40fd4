-- Copy the waiting jobs of one database into another, e.g. when moving from
-- SQLite to PostgreSQL:
--
--   lua5.4 examples/copy_jobs.lua sqlite:scheduler.db postgresql://app@db/app
--
-- Each job keeps its name, payload, run_at, key, priority and max_attempts,
-- and is stored in the target in one transaction (all or none).  Keys make
-- a second run harmless for keyed jobs; jobs without a key would be copied
-- twice.  Running and failed jobs are not copied (let the workers finish,
-- or retry failed jobs first), nor recurring schedules (workers declare
-- them again at start).  Stop the producers and the workers of the source
-- first, so that nothing changes while you copy.
local scheduler = require "scheduler"

local from, to = arg[1], arg[2]
if not from or not to then
  io.stderr:write("usage: lua5.4 examples/copy_jobs.lua FROM-DATABASE TO-DATABASE\n")
  os.exit(2)
end

local source <close> = scheduler.new { database = from, log = false }
local jobs = assert(source:jobs { state = "scheduled" })

local list = {}
for i, j in ipairs(jobs) do
  list[i] = { j.name, j.payload, { at = j.run_at, key = j.key, priority = j.priority,
    max_attempts = j.max_attempts } }
end

local target <close> = scheduler.new { database = to, log = false }
local ids = assert(target:schedule_many(list))
print(("copied %d waiting jobs from %s"):format(#ids, from))
