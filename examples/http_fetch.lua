-- A listener file whose jobs make HTTP calls without blocking: lua-http's
-- client on cqueues, so one worker process has up to C calls in flight.
--
--   bin/lua-scheduler run --concurrency 50 examples/http_fetch.lua
--   bin/lua-scheduler schedule Fetch '{"url": "http://127.0.0.1:8080/"}'
--
-- Each Fetch job GETs payload.url (10 s at most) and prints the status and
-- the size of the body.  A network error or a status other than 2xx raises,
-- so the job is retried later by the usual policy (max_attempts, backoff).
-- Under `run --concurrency C` (C > 1) every job runs in a coroutine of the
-- worker's cqueues loop, and the client's waits yield to it; at the
-- default --concurrency 1 the same code works too, one call at a time.

-- lua-http is pure Lua, but Debian 12 installs it (and the pure-Lua modules
-- it needs) for Lua 5.1-5.3 only: the same files run unchanged on 5.4.
if not pcall(require, "http.request") then
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua"
    .. ";/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"
end

local http_request = require "http.request"
local scheduler = require "scheduler"

io.stdout:setvbuf("line") -- one line per job, also when stdout is a file or a pipe

local TIMEOUT = 10 -- seconds, for the whole exchange

scheduler.on("Fetch", function(payload, job)
  local url = assert(type(payload) == "table" and payload.url, "payload.url: expected a URL")
  local req = http_request.new_from_uri(url)
  req.headers:upsert("user-agent", "lua-scheduler-example")
  local headers, stream = req:go(TIMEOUT)
  if not headers then error(("GET %s: %s"):format(url, tostring(stream)), 0) end
  local status = headers:get(":status")
  local body, err = stream:get_body_as_string(TIMEOUT)
  stream:shutdown()
  if not body then error(("GET %s: reading the body: %s"):format(url, tostring(err)), 0) end
  if not status:match("^2") then error(("GET %s: HTTP %s"):format(url, status), 0) end
  print(("fetched %s: %s, %d bytes (job %d, attempt %d)"):format(url, status, #body, job.id, job.attempt))
end)
