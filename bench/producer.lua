-- bench/producer.lua: schedules jobs for the benchmark, in its own process
-- (spawned by bench/run.lua as `lua5.4 bench/producer.lua MODE key=value ...`).
-- Prints one "RESULT key=value ..." line; errors go to stderr, exit non-zero.
--
-- Modes:
--   pace    name=N count=K interval=S [dmin=A dmax=B] [seed=X]
--           schedule() K jobs one at a time, one every S seconds (on an
--           absolute grid, so a slow call does not shift the later ones);
--           due now, or with dmax > 0 due in a random A..B seconds
--           ({ delay = d }: counted from the database clock).
--   enqueue name=N count=K
--           schedule() K jobs one at a time, as fast as it can (each call
--           returns once its job is committed): elapsed seconds.
--   bulk    name=N count=K chunk=C
--           scheduler.schedule_many(list) with lists of C jobs, K in all
--           (each call: one transaction, returns the ids); reports missing=1
--           when the API does not exist.

local scheduler = require "scheduler"
local now = scheduler.now

local mode = arg[1]
local opt, num, result = dofile((arg[0]:match("^(.*)/") or ".") .. "/child.lua")("producer")

local name = assert(opt.name, "producer: name= is required")
local count = math.tointeger(num("count"))
scheduler.configure { log = "warn" }
assert(scheduler.job(0) == nil) -- connect before the clock starts

if mode == "pace" then
  local sys = require "system"
  local interval, dmin, dmax = num("interval", 0.005), num("dmin", 0), num("dmax", 0)
  math.randomseed(math.tointeger(num("seed", 1)))
  local start = now()
  for i = 1, count do
    local wait = start + (i - 1) * interval - now()
    if wait > 0 then sys.sleep(wait) end
    local when
    if dmax > 0 then when = { delay = dmin + math.random() * (dmax - dmin) } end
    assert(scheduler.schedule(name, { i = i }, when))
  end
  result { count = count, elapsed = now() - start }
elseif mode == "enqueue" then
  local payload = {}
  local t0 = now()
  for _ = 1, count do
    assert(scheduler.schedule(name, payload))
  end
  result { count = count, elapsed = now() - t0 }
elseif mode == "bulk" then
  local many = scheduler.schedule_many
  if type(many) ~= "function" then
    result { missing = 1 }
    os.exit(0)
  end
  local chunk = math.tointeger(num("chunk", 1000))
  -- items are the arguments of schedule(): { name, payload [, when] }
  local list = {}
  for i = 1, chunk do list[i] = { name, {} } end
  local done = 0
  local t0 = now()
  while done < count do
    local n = math.min(chunk, count - done)
    if n < chunk then
      list = table.move(list, 1, n, 1, {})
    end
    local ids, err = many(list)
    if not ids then error("producer: schedule_many: " .. tostring(err)) end
    if type(ids) ~= "table" or #ids ~= n or math.type(ids[1]) ~= "integer" then
      error("producer: schedule_many did not return " .. n .. " ids")
    end
    done = done + n
  end
  result { count = done, elapsed = now() - t0 }
else
  io.stderr:write("producer: unknown mode ", tostring(mode), "\n")
  os.exit(2)
end
