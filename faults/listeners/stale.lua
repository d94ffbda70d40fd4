-- faults/listeners/stale.lua: the listener of scenario stale_write.  Its
-- jobs (name "fault_stale") block in C (sleep) past their time limit, for
-- `sleep` seconds on attempt 1 and `again` seconds after, so that the
-- worker stops renewing the lease (heartbeat.h) and the job is claimed
-- again elsewhere while the first run goes on.  Each run is recorded as
-- record.lua records them, in the same file (appends: O_APPEND).
local scheduler = require "scheduler"
local core = require "scheduler.core"
local system = require "system"

local dir = os.getenv("FAULTS_RECORDS")
local pid = core.process.getpid()
local out

scheduler.on("fault_stale", function(p, job)
  if not out then
    out = assert(io.open(("%s/%d.log"):format(assert(dir, "FAULTS_RECORDS is not set"), pid), "a"))
    out:setvbuf("no")
  end
  out:write(("%d %d %d %.6f %.6f %d\n"):format(job.id, job.attempt, pid, scheduler.now(), job.run_at,
    math.tointeger(p.seq) or -1))
  system.sleep(job.attempt == 1 and p.sleep or p.again)
end, { timeout = 0.3 })
