-- The PayBills listener, in the form that returns a table of listeners.
-- Run it with the other example listener:
--   bin/lua-scheduler run examples/listeners
local scheduler = require "scheduler"

return {
  PayBills = function(payload, job)
    local now = scheduler.now()
    print(string.format("%s  %-36s (%.1f ms after its time)",
      os.date("%H:%M:%S", math.floor(now)) .. string.format(".%03d", math.floor(now * 1000) % 1000),
      string.format("paying %.2f to %s", payload.amount, payload.account),
      (now - job.run_at) * 1000))
  end,
}
