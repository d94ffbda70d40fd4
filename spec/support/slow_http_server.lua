-- spec/support/slow_http_server.lua: a local HTTP server for
-- spec/examples_concurrent_spec.lua, on 127.0.0.1 only.
--
--   lua5.4 spec/support/slow_http_server.lua DIR DELAY_MS
--
-- Writes its port to DIR/port, then answers every request after DELAY_MS
-- (a cqueues timer: requests overlap) with 200 and the path as the body;
-- a path that contains "fail-once" gets 503 the first time.  It appends
-- "<event> <path> <monotonic seconds>" lines to DIR/record (events: start
-- when a request arrives, end when it is answered): the record of what the
-- clients asked, independent of theirs.  Runs until killed.

if not pcall(require, "http.server") then
  package.path = package.path .. ";/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua"
    .. ";/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"
end

local cqueues = require "cqueues"
local http_server = require "http.server"
local http_headers = require "http.headers"

local dir, delay = assert(arg[1], "DIR"), assert(tonumber(arg[2]), "DELAY_MS") / 1000

local record = assert(io.open(dir .. "/record", "a"))
record:setvbuf("no")
local function note(event, path)
  record:write(("%s %s %.6f\n"):format(event, path, cqueues.monotime()))
end

local failed = {}
local server = assert(http_server.listen {
  host = "127.0.0.1", port = 0, tls = false,
  onstream = function(_, stream)
    local req = assert(stream:get_headers())
    local path = req:get(":path")
    note("start", path)
    cqueues.sleep(delay)
    local status = "200"
    if path:find("fail-once", 1, true) and not failed[path] then
      failed[path] = true
      status = "503"
    end
    local h = http_headers.new()
    h:append(":status", status)
    h:append("content-type", "text/plain")
    assert(stream:write_headers(h, false))
    assert(stream:write_chunk(path .. "\n", true))
    note("end", path)
  end,
})
assert(server:listen())
local _, _, port = server:localname()
local f = assert(io.open(dir .. "/port.tmp", "w"))
f:write(port, "\n")
f:close()
assert(os.rename(dir .. "/port.tmp", dir .. "/port"))
assert(server:loop())
