--- scheduler.luv: a worker inside a libuv loop (luv).
--
--   local uv, scheduler = require "luv", require "scheduler"
--   local s = scheduler.new { database = url, concurrency = 200 }
--   s:on("Fetch", function(payload, job)
--     local co = coroutine.running()           -- wait without blocking:
--     local t = uv.new_timer()                 -- yield, and resume from a
--     t:start(100, 0, function() t:close(); coroutine.resume(co) end)
--     coroutine.yield()                        -- luv callback
--   end)
--   require("scheduler.luv").attach(s)         -- the worker now lives in uv's loop
--   uv.run()                                   -- returns after s:stop()
--
-- Each job runs in a coroutine of its own, resumed by whatever callback
-- its listener waits for.  The worker's descriptor is watched with a
-- uv poll handle and its own work is timed with a uv timer; the database
-- work happens on the core's own thread, so the loop never waits for it.

local uv = require "luv"

--- A coroutine waits (yields) until wake() resumes it, from a step.
local function waiter()
  local co = coroutine.running()
  return {
    wait = coroutine.yield,
    wake = function()
      local ok, err = coroutine.resume(co)
      if not ok then error(err, 0) end
    end,
  }
end

local M = {}

--- Start the worker of instance s in luv's loop.  Returns s.
function M.attach(s)
  assert(s:start { waiter = waiter })
  local poll = uv.new_poll(s:pollfd())
  local timer = uv.new_timer()
  local step
  step = function()
    if not s:step(0) then
      poll:stop()
      timer:stop()
      poll:close()
      timer:close()
      return
    end
    local t = s:timeout()
    timer:stop()
    if t then timer:start(math.max(0, math.ceil(t * 1000)), 0, step) end
  end
  poll:start("r", step)
  local first = uv.new_timer()
  first:start(0, 0, function() first:close(); step() end)
  return s
end

return M
