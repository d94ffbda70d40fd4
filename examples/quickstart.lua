-- Quick start: an e-mail listener and a bill-paying listener, with one job
-- each scheduled 1 s and 2 s ahead; each is printed when it runs, on time.
-- Run it with `make example` (it starts a throwaway PostgreSQL), or with
-- LUA_SCHEDULER_DATABASE pointing at yours: lua5.4 examples/quickstart.lua
local scheduler = require "scheduler"

scheduler.configure { log = "warn" } -- database: $LUA_SCHEDULER_DATABASE

local start = scheduler.now()
local function report(job, what)
  print(string.format("+%.3f s  %-40s (%.1f ms after its time)",
    scheduler.now() - start, what, (scheduler.now() - job.run_at) * 1000))
end

local left = 2
local function done()
  left = left - 1
  if left == 0 then scheduler.stop() end
end

scheduler.on("SendEmail", function(payload, job)
  report(job, "sending e-mail to " .. payload.to)
  done()
end)

scheduler.on("PayBills", function(payload, job)
  report(job, string.format("paying %.2f to %s", payload.amount, payload.account))
  done()
end)

assert(scheduler.schedule("SendEmail", { to = "ada@example.com" }, { delay = 1 }))
assert(scheduler.schedule("PayBills", { account = "ACME-42", amount = 99.5 }, scheduler.now() + 2))

print("scheduled; waiting for them...")
scheduler.run { seconds = 10 } -- returns when both ran (stop()), 10 s at most
