--- scheduler.cqueues: a worker inside a cqueues loop.
--
--   local cqueues, scheduler = require "cqueues", require "scheduler"
--   local s = scheduler.new { database = url, concurrency = 200 }
--   s:on("Fetch", function(payload, job) cqueues.sleep(0.1) end) -- any cqueues I/O
--   local cq = cqueues.new()
--   require("scheduler.cqueues").attach(s, cq)  -- the worker now lives in cq
--   cq:wrap(function() --[[ the program's own work ]] end)
--   assert(cq:loop())                           -- returns after s:stop()
--
-- Each job runs in a coroutine of cq (cq:wrap), so its listener may use
-- cqueues' sockets, timers and lua-http.  The instance is a cqueues
-- pollable (pollfd, events, timeout): one coroutine waits on it with
-- cqueues.poll and steps the worker; the database work happens on the
-- core's own thread, so cq never waits for it.

local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local monotonic = require("scheduler.core").process.monotonic

local POLL = cqueues._POLL -- what cqueues.poll yields (cqueues' own auxlib.resume relays it too)
local pack, unpack, resume, yield = table.pack, table.unpack, coroutine.resume, coroutine.yield

--- Call fn in a coroutine of its own, relaying its polls to cq, until it
-- returns (its results) or `deadline` (monotonic) passes while it waits
-- (nothing: the coroutine is dropped, with whatever it waited for).
local function call(fn, deadline)
  local co = coroutine.create(fn)
  local r = pack(resume(co))
  while r[1] and r[2] == POLL do
    local args = pack(unpack(r, 3, r.n))
    if deadline then
      local left = deadline - monotonic()
      if left <= 0 then return end
      -- cqueues waits for the earliest of its timeouts; a bare poll() only
      -- lets the others run and comes back at once: nothing to add
      if args.n > 0 then
        args.n = args.n + 1
        args[args.n] = left
      end
    end
    local got = pack(yield(POLL, unpack(args, 1, args.n)))
    if deadline and monotonic() >= deadline then return end
    r = pack(resume(co, unpack(got, 1, got.n)))
  end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- A coroutine of cq waits on a condition variable until wake().
local function waiter()
  local cond = condition.new()
  return { wait = function() cond:wait() end, wake = function() cond:signal() end }
end

local M = {}

--- Start the worker of instance s in controller cq.  Returns s.
function M.attach(s, cq)
  assert(s:start { spawn = function(fn) cq:wrap(fn) end, release = cqueues.cancel, call = call,
    waiter = waiter })
  cq:wrap(function()
    while s:step(0) do
      cqueues.poll(s)
    end
  end)
  return s
end

return M
