-- bench/worker.lua: one worker process of the benchmark, spawned by
-- bench/run.lua as `lua5.4 bench/worker.lua MODE key=value ...`.
--
-- It talks to the driver on stdout: "READY" once connected (modes drain and
-- lateness), then one "RESULT key=value ..." line.  Errors go to stderr and
-- exit non-zero.  Times are scheduler.now() (host wall clock, Unix seconds);
-- the database runs on the same host, so its clock is the same clock.
--
-- Modes:
--   drain    name=N go=FILE [gaps=1 gap=SECONDS] [history=DURATION]
--            connect, print READY, wait for FILE to exist (so that several
--            workers start together), then t0 = now(); run{drain=true};
--            t1 = now().  The listener is a no-op that counts (and notes the
--            time of its first call).  With gaps=1 it also notes every pause
--            between two listener calls longer than `gap` seconds: those are
--            the batch boundaries (record outcomes + claim the next batch).
--            history=DURATION: configure{history} (finished jobs are kept).
--   lateness name=N expect=K seconds=S out=FILE
--            connect, print READY, run until K jobs ran (or S seconds); the
--            listener stores now() - job.run_at; the samples (ms) go to FILE.
--   first    name=N seconds=S
--            from process start: configure, register, run; the first
--            listener call stops it.  Reports when the module was loaded and
--            when the listener was first called.
-- Every mode reports the peak RSS (VmHWM, kB) at its end.

local scheduler = require "scheduler"
local now = scheduler.now
local t_loaded = now()

local mode = arg[1]
local opt, num, result = dofile((arg[0]:match("^(.*)/") or ".") .. "/child.lua")("worker")

local function status_kb(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or -1
end

local function ready()
  io.stdout:write("READY\n")
  io.stdout:flush()
end

local name = assert(opt.name, "worker: name= is required")
scheduler.configure { log = "warn", history = opt.history }

if mode == "drain" then
  local n, first = 0, nil
  local listener
  local gaps, gap_sum, last_call = {}, 0, nil
  if opt.gaps == "1" then
    local threshold = num("gap", 0.0002)
    local last
    listener = function()
      local t = now()
      if last then
        local d = t - last
        if d > threshold then
          gaps[#gaps + 1] = d
          gap_sum = gap_sum + d
        end
      else
        first = t
      end
      last = t
      last_call = t
      n = n + 1
    end
  else
    listener = function()
      if n == 0 then first = now() end
      n = n + 1
    end
  end
  scheduler.on(name, listener)
  -- Connect (and check the schema) before the clock starts.
  assert(scheduler.job(0) == nil)
  ready()
  local go = assert(opt.go, "worker: go= is required")
  local sys = require "system"
  local give_up = now() + 60
  while true do
    local f = io.open(go, "r")
    if f then
      f:close()
      break
    end
    if now() > give_up then error("worker: no go signal within 60 s") end
    sys.sleep(0.0002)
  end
  local t0 = now()
  local ran, err = scheduler.run { drain = true }
  local t1 = now()
  if not ran then error("worker: run{drain=true} failed: " .. tostring(err)) end
  local r = { ran = ran, calls = n, t0 = t0, t1 = t1, first = first or -1, rss_kb = status_kb("VmHWM") }
  if opt.gaps == "1" then
    table.sort(gaps)
    r.gaps = #gaps
    r.gap_sum = gap_sum
    r.gap_p50 = #gaps > 0 and gaps[(#gaps + 1) // 2] or 0.0
    r.gap_max = #gaps > 0 and gaps[#gaps] or 0.0
    r.last = last_call
  end
  result(r)
elseif mode == "lateness" then
  local expect = math.tointeger(num("expect"))
  local out = assert(opt.out, "worker: out= is required")
  local samples, k = {}, 0
  scheduler.on(name, function(_, job)
    k = k + 1
    samples[k] = now() - job.run_at
    if k >= expect then scheduler.stop() end
  end)
  assert(scheduler.job(0) == nil)
  ready()
  local ok, err = scheduler.run { seconds = num("seconds", 60) }
  if not ok then error("worker: run failed: " .. tostring(err)) end
  local f = assert(io.open(out, "w"))
  for i = 1, k do f:write(string.format("%.4f\n", samples[i] * 1000)) end
  f:close()
  result { got = k, rss_kb = status_kb("VmHWM") }
elseif mode == "first" then
  local t_first
  scheduler.on(name, function()
    t_first = t_first or now()
    scheduler.stop()
  end)
  local ok, err = scheduler.run { seconds = num("seconds", 10) }
  if not ok then error("worker: run failed: " .. tostring(err)) end
  result { t_loaded = t_loaded, t_first = t_first or -1.0, rss_kb = status_kb("VmHWM") }
else
  io.stderr:write("worker: unknown mode ", tostring(mode), "\n")
  os.exit(2)
end
