-- bench/limited.lua: a worker process of the benchmark's limits rows
-- (issue 16), spawned by bench/limits.lua as
-- `lua5.4 bench/limited.lua timer name=N concurrency=C wait=S go=FILE out=FILE [seconds=S] [drain=0]`
-- (timer: the only mode, as bench/waiter.lua's).
--
-- One instance with `concurrency = C` in a cqueues loop of its own runs the
-- jobs named N (already inserted, due now; the driver may have limited the
-- name), each listener waiting S seconds on a cqueues timer.  It prints
-- READY once connected, starts when FILE `go` exists (so that the workers
-- start together), and stops once no job of N is left in the database and
-- none of its own is running (or after `seconds`; with drain=0, after
-- `seconds` only).
--
-- Its own record, independent of the scheduler's counts: every listener
-- call's job id, start and end (scheduler.now(), one clock for all the
-- workers of the host) and its payload's tenant (its partition when the
-- name is limited by tenant; none: empty), written to FILE `out` as
-- "id start end tenant" lines at the end.  Then one line:
--   RESULT ran=K errors=E rss_kb=R cpu_s=S
-- Errors go to stderr and exit non-zero.

local scheduler = require "scheduler"
local opt, num, result, proc = dofile((arg[0]:match("^(.*)/") or ".") .. "/child.lua")("limited")
local cqueues = require "cqueues"
local now = scheduler.now

if arg[1] ~= "timer" then
  io.stderr:write("limited: unknown mode ", tostring(arg[1]), "\n")
  os.exit(2)
end
local name = assert(opt.name, "limited: name= is required")
local out = assert(opt.out, "limited: out= is required")
local go = assert(opt.go, "limited: go= is required")
local concurrency = math.tointeger(num("concurrency"))
local wait = num("wait")
local seconds = num("seconds", 600)
-- drain=0: run for `seconds`, without looking for jobs left (listing a
-- name's jobs sorts them all: 0.6 s at 1,000,000, which would hold the
-- loop; the fairness row)
local drain = num("drain", 1) ~= 0

local s = scheduler.new { log = "warn", concurrency = concurrency }
local record, inflight, errors = {}, 0, 0

s:on(name, function(payload, job)
  local t0 = now()
  inflight = inflight + 1
  local ok, err = pcall(cqueues.sleep, wait)
  inflight = inflight - 1
  if not ok then
    errors = errors + 1
    error(err, 0)
  end
  record[#record + 1] = string.format("%d %.6f %.6f %s\n", job.id, t0, now(),
    type(payload) == "table" and payload.tenant or "")
end)

-- connected: the driver may start everyone once all are ready
assert(s:job(0) == nil)
io.stdout:write("READY\n")
io.stdout:flush()
while not io.open(go, "r") do cqueues.sleep(0.005) end

local cq = cqueues.new()
require("scheduler.cqueues").attach(s, cq)
-- the end: no job of the name left (all workers together) and none of ours
-- running; or the bound
cq:wrap(function()
  local deadline = now() + seconds
  while true do
    cqueues.sleep(0.1)
    if drain and inflight == 0 and #assert(s:jobs { name = name, limit = 1 }) == 0 then break end
    if now() > deadline and not drain then break end
    if now() > deadline then
      io.stderr:write(("limited: jobs of %s still left after %g s\n"):format(name, seconds))
      break
    end
  end
  s:stop()
end)
local ok, err = cq:loop()
if not ok then error("limited: the loop failed: " .. tostring(err)) end
s:close()

local f = assert(io.open(out, "w"))
f:write(table.concat(record))
f:close()
result { ran = #record, errors = errors, rss_kb = proc.rss_kb(), cpu_s = proc.cpu_seconds() }
