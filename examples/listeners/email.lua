-- The SendEmail listener, in the form that calls scheduler.on.
-- Run it with the other example listener:
--   bin/lua-scheduler run examples/listeners
local scheduler = require "scheduler"

scheduler.on("SendEmail", function(payload, job)
  -- a real listener would talk to an SMTP server here; raising an error
  -- makes the job retry later
  local now = scheduler.now()
  print(string.format("%s  %-36s (%.1f ms after its time)",
    os.date("%H:%M:%S", math.floor(now)) .. string.format(".%03d", math.floor(now * 1000) % 1000),
    "sending e-mail to " .. payload.to, (now - job.run_at) * 1000))
end)
