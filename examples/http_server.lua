-- A web server that schedules a job per request, and runs those jobs itself:
-- one process, one cqueues loop for the lua-http server and the worker.
--
--   lua5.4 examples/http_server.lua [PORT]       -- PORT 0 (default): any free port
--   curl -X POST 'http://127.0.0.1:PORT/send?to=ada@example.com'
--   curl -X POST 'http://127.0.0.1:PORT/send?to=bob@example.com&delay=5'
--
-- POST /send?to=ADDRESS[&delay=SECONDS] schedules a SendWelcome job and
-- answers 202 with its id; the listener "sends" the mail (it waits 100 ms
-- on a cqueues timer, where a real one would talk to an SMTP server with
-- cqueues sockets) and prints a line.  Up to 100 jobs run at once, while
-- the server keeps answering.  SIGTERM or SIGINT stop it gracefully: no
-- new request is taken, the jobs in flight end, the rest stay in the
-- database for the next start; then the process exits 0.
-- The database: $LUA_SCHEDULER_DATABASE, else ./scheduler.db.

-- lua-http is pure Lua, but Debian 12 installs it (and the pure-Lua modules
-- it needs) for Lua 5.1-5.3 only: the same files run unchanged on 5.4.
if not pcall(require, "http.server") then
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua"
    .. ";/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"
end

local cqueues = require "cqueues"
local signal = require "cqueues.signal"
local http_server = require "http.server"
local http_headers = require "http.headers"
local http_util = require "http.util"
local scheduler = require "scheduler"

io.stdout:setvbuf("line") -- one line per event, also when stdout is a file

local port = tonumber(arg[1] or "0")
if not port or port ~= math.floor(port) or port < 0 or port > 65535 then
  io.stderr:write("usage: lua5.4 examples/http_server.lua [PORT]\n")
  os.exit(2)
end

local s = scheduler.new { concurrency = 100, log = "warn" }

-- The job: runs in a coroutine of the loop below, so it may wait on any
-- cqueues I/O (sockets, timers, lua-http's client) without holding up the
-- server or the other jobs.  Raising an error retries it later.
s:on("SendWelcome", function(payload, job)
  cqueues.sleep(0.1) -- stands for the SMTP conversation
  print(("sent welcome to %s (job %d, attempt %d)"):format(payload.to, job.id, job.attempt))
end)

local function reply(stream, status, body)
  local h = http_headers.new()
  h:append(":status", tostring(status))
  h:append("content-type", "text/plain; charset=utf-8")
  assert(stream:write_headers(h, false))
  assert(stream:write_chunk(body, true))
end

-- One HTTP request (in its own coroutine of the same loop).
local function onstream(_, stream)
  local req = assert(stream:get_headers())
  local method, path = req:get(":method"), req:get(":path")
  local route, query = path:match("^([^?]*)%??(.*)$")
  if route ~= "/send" then return reply(stream, 404, "not found\n") end
  if method ~= "POST" then return reply(stream, 405, "use POST\n") end
  local args = {}
  for k, v in http_util.query_args(query) do args[k] = v end
  local delay = tonumber(args.delay or "0")
  if not args.to or args.to == "" or not delay or delay < 0 then
    return reply(stream, 400, "usage: POST /send?to=ADDRESS[&delay=SECONDS]\n")
  end
  local id, err = s:schedule("SendWelcome", { to = args.to }, { delay = delay })
  if not id then return reply(stream, 503, err .. "\n") end
  reply(stream, 202, ("scheduled job %d\n"):format(id))
end

local cq = cqueues.new()
local server = assert(http_server.listen {
  host = "127.0.0.1", port = port, tls = false, cq = cq, onstream = onstream,
  onerror = function(_, context, op, err)
    io.stderr:write(("http: %s on %s: %s\n"):format(op, tostring(context), tostring(err)))
  end,
})
assert(server:listen())
local _, _, bound = server:localname()
print(("listening on http://127.0.0.1:%d"):format(bound))

-- SIGTERM and SIGINT arrive as an event of the loop (signalfd), not as an
-- interruption (the worker's database thread blocks every signal).
signal.block(signal.SIGTERM, signal.SIGINT)
local signals = signal.listen(signal.SIGTERM, signal.SIGINT)

require("scheduler.cqueues").attach(s, cq) -- the worker now lives in cq too

cq:wrap(function()
  local sig = signals:wait()
  print(("signal %d: stopping after the jobs in flight"):format(sig))
  server:close() -- no new connection; requests in progress are answered
  s:stop()       -- claim nothing more; cq:loop() returns once the jobs in flight ended
end)

assert(cq:loop())
s:close()
print("stopped")
