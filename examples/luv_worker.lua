-- A worker inside a luv (libuv) program: the jobs wait on uv timers, and the
-- program's own timer keeps ticking on time while up to 50 of them wait.
--
--   lua5.4 examples/luv_worker.lua [--schedule K] [--stop-after N]
--   lua5.4 examples/luv_worker.lua --schedule 200 --stop-after 200
--   bin/lua-scheduler schedule Thumbnail '{"image": "cat.png", "ms": 300}'
--
-- --schedule K first schedules K Thumbnail jobs; --stop-after N stops
-- gracefully once N jobs have run here; SIGTERM or SIGINT (uv signal
-- handles) stop it gracefully too: no job is claimed after that, the ones
-- in flight end, then uv.run() returns and the process exits 0.  It prints
-- a line per job and, at the end, how many times its own timer fired and
-- how late it was at worst.  The database: $LUA_SCHEDULER_DATABASE, else
-- ./scheduler.db.

local uv = require "luv"
local scheduler = require "scheduler"

io.stdout:setvbuf("line") -- one line per event, also when stdout is a file

local to_schedule, stop_after = 0, nil
do
  local i = 1
  while arg[i] do
    local flag, n = arg[i], math.tointeger(tonumber(arg[i + 1] or ""))
    if flag == "--schedule" and n and n >= 0 then
      to_schedule = n
    elseif flag == "--stop-after" and n and n > 0 then
      stop_after = n
    else
      io.stderr:write("usage: lua5.4 examples/luv_worker.lua [--schedule K] [--stop-after N]\n")
      os.exit(2)
    end
    i = i + 2
  end
end

local s = scheduler.new { concurrency = 50, log = "warn" }

--- Wait `ms` milliseconds without blocking the loop: a listener runs in a
-- coroutine of its own, so it yields, and the timer's callback resumes it.
-- Any luv request or handle works the same way (sockets, processes, files).
local function sleep_ms(ms)
  local co = coroutine.running()
  local timer = uv.new_timer()
  timer:start(ms, 0, function()
    timer:close()
    -- a coroutine abandoned at its time limit raises when resumed: say so
    -- (this one has no limit; a listener registered with `timeout` may)
    local ok, err = coroutine.resume(co)
    if not ok then io.stderr:write("resumed after its time limit: ", tostring(err), "\n") end
  end)
  coroutine.yield()
end

local stopping, in_flight, ran = false, 0, 0
local signals = {}

local function stop(why)
  if stopping then return end
  stopping = true
  print(("stopping (%s) after the jobs in flight"):format(why))
  for _, h in ipairs(signals) do h:close() end
  s:stop() -- claim nothing more; uv.run() returns once the jobs in flight ended
end

s:on("Thumbnail", function(payload, job)
  in_flight = in_flight + 1
  sleep_ms(payload.ms or 100) -- stands for the image service's answer
  in_flight = in_flight - 1
  ran = ran + 1
  print(("made a thumbnail of %s (job %d, attempt %d)"):format(payload.image, job.id, job.attempt))
  if stop_after and ran >= stop_after then stop(ran .. " jobs") end
end)

if to_schedule > 0 then
  local list = {}
  for i = 1, to_schedule do list[i] = { "Thumbnail", { image = ("img%d.png"):format(i) } } end
  assert(s:schedule_many(list))
  print(("scheduled %d jobs"):format(to_schedule))
end

for _, name in ipairs { "sigterm", "sigint" } do
  local h = uv.new_signal()
  h:start(name, function() stop(name) end)
  signals[#signals + 1] = h
end

-- The program's own work: a timer every 20 ms, and how late it fires
-- (libuv counts each period from the previous callback, in milliseconds;
-- a histogram, so that a long run keeps no list).  It stops once the
-- worker is stopping and no job of ours is in flight.
local PERIOD = 20
local ticks, late = 0, {} -- late[ms] = how many ticks came that late
local ticker = uv.new_timer()
uv.update_time() -- uv.now() is the loop's cached time
local last = uv.now()
ticker:start(PERIOD, PERIOD, function()
  uv.update_time()
  local now = uv.now()
  local ms = math.max(0, now - last - PERIOD)
  ticks, late[ms], last = ticks + 1, (late[ms] or 0) + 1, now
  if stopping and in_flight == 0 then ticker:close() end
end)

--- The tick lateness at quantile q (0..1), in ms.
local function quantile(q)
  local ms, seen = 0, 0
  for k in pairs(late) do if k > ms then ms = k end end
  local want = math.ceil(ticks * q)
  for k = 0, ms do
    seen = seen + (late[k] or 0)
    if seen >= want then return k end
  end
  return ms
end

require("scheduler.luv").attach(s) -- the worker now lives in uv's default loop
print("running")
uv.run()
s:close()
print(("stopped: %d jobs ran; the program's timer fired %d times, late by %d ms at p99, %d ms at worst")
  :format(ran, ticks, quantile(0.99), quantile(1)))
