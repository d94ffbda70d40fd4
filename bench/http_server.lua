-- bench/http_server.lua: the HTTP server of the benchmark's socket round
-- trip row, in its own process (spawned by bench/concurrent.lua as
-- `lua5.4 bench/http_server.lua serve delay=SECONDS`).
--
-- A lua-http server on cqueues, on 127.0.0.1 (a free port the kernel
-- picks), that answers every request with 200 "ok" after `delay` seconds
-- (default 0.1) without blocking: each request waits on a cqueues timer
-- in its own coroutine, so it serves any number at once.  Prints
-- "READY port=P pid=N" once it listens; on SIGTERM (the driver's kill, by
-- that pid) prints "RESULT requests=N errors=N cpu_s=S rss_kb=K" and
-- exits 0.  Errors go to stderr.

local opt, num, result, proc = dofile((arg[0]:match("^(.*)/") or ".") .. "/child.lua")("http_server")
proc.use_lua_http()
local cqueues = require "cqueues"
local signal = require "cqueues.signal"
local http_server = require "http.server"
local http_headers = require "http.headers"

local delay = num("delay", 0.1)
local requests, errors = 0, 0

local server = assert(http_server.listen {
  host = "127.0.0.1",
  port = 0,
  reuseaddr = true,
  onstream = function(_, stream)
    local req = stream:get_headers()
    if not req then return end -- the client went away
    cqueues.sleep(delay)
    local h = http_headers.new()
    h:append(":status", "200")
    h:append("content-type", "text/plain")
    h:append("content-length", "2")
    assert(stream:write_headers(h, false))
    assert(stream:write_chunk("ok", true))
    requests = requests + 1
  end,
  onerror = function(_, context, op, err)
    errors = errors + 1
    io.stderr:write("http_server: ", tostring(context), " ", tostring(op), ": ", tostring(err), "\n")
  end,
})
assert(server:listen())
local _, _, port = server:localname()
-- SIGTERM ends the run: blocked here, taken by a listener in the loop
signal.block(signal.SIGTERM)
local term = signal.listen(signal.SIGTERM)
local cq = cqueues.new()
cq:wrap(function() assert(server:loop()) end)
cq:wrap(function()
  term:wait()
  result { requests = requests, errors = errors, cpu_s = proc.cpu_seconds(), rss_kb = proc.rss_kb() }
  os.exit(0)
end)
io.stdout:write(string.format("READY port=%d pid=%d\n", port, proc.pid()))
io.stdout:flush()
local ok, err = cq:loop()
if not ok then error("http_server: " .. tostring(err)) end
